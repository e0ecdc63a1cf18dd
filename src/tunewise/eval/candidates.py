"""Candidates: the (model, prompt) pairs an evaluation compares, and the endpoint each one is reached through.

A candidates file (YAML or TOML) holds a list of candidates::

    candidates:
      - name: base-long-prompt
        model: smollm2-135m-instruct
        system_prompt_file: system_prompt_long.txt
        few_shot: few_shot.jsonl
        price_model: gpt-4o-mini          # "what would this cost on gpt-4o-mini"
      - name: fine-tuned
        model: ft:smollm2-135m-instruct:tunewise::abc123
        system_prompt_file: system_prompt_short.txt

Relative paths are read from the candidates file's directory. The endpoint of a candidate is, first found:
its own ``base_url``/``api_key`` (or ``api_key_env``), then ``OPENAI_BASE_URL``/``OPENAI_API_KEY``, then
``$TUNEWISE_HOME/credentials.json`` (written by ``tunewise serve``).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tunewise import paths
from tunewise.errors import UsageError

OPENAI_BASE_URL = "https://api.openai.com/v1"

# "schema" as a response_format is shorthand for a json_schema response format built from --schema.
SCHEMA_SHORTHAND = "schema"

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-+]+$")


@dataclass
class Candidate:
    """One (model, prompt) pair to evaluate, and how to reach it."""

    name: str
    """Short label used in results and the report (letters, digits, ``._-+``)."""
    model: str
    """Model name sent to the endpoint (``gpt-4o-mini``, ``smollm2-135m-instruct``, ``ft:...``)."""
    system_prompt: str | None = None
    """System prompt; replaces the example's own system message. None keeps the example's own."""
    few_shot: list[dict] = field(default_factory=list)
    """Messages inserted after the system prompt (user/assistant turns), e.g. from a few-shot JSONL file."""
    base_url: str | None = None
    """OpenAI-compatible endpoint (ending in ``/v1``); None: ``OPENAI_BASE_URL`` or the local server's credentials."""
    api_key: str | None = None
    """API key for ``base_url``; prefer ``api_key_env`` so files carry no secrets."""
    api_key_env: str | None = None
    """Name of an environment variable holding the API key."""
    response_format: dict | None = None
    """OpenAI ``response_format`` (``{"type": "json_schema", ...}`` for structured outputs); None for plain text."""
    temperature: float = 0.0
    """Sampling temperature; 0 makes runs repeatable and the cache meaningful."""
    max_tokens: int | None = None
    """Longest answer, in tokens; None lets the endpoint decide."""
    price_model: str | None = None
    """Catalog model whose prices (and encoding) cost this candidate; None: the model's own catalog entry."""
    kind: str | None = None
    """``prompting``, ``structured`` or ``fine-tuned``; None infers it (``ft:`` names, a response_format)."""
    tool_choice: str | dict | None = None
    """OpenAI ``tool_choice`` sent with an example's ``tools`` (``auto``, ``required``, ``none`` or ``{"type":
    "function", "function": {"name": ...}}``); None leaves it to the endpoint (``auto``)."""

    @property
    def role(self) -> str:
        """What the candidate stands for in the decision: ``fine-tuned``, ``structured`` or ``prompting``."""
        if self.kind:
            return self.kind
        if self.model.startswith("ft:") or (self.price_model or "").startswith("ft:"):
            return "fine-tuned"
        if self.response_format and self.response_format.get("type") in ("json_schema", "json_object"):
            return "structured"
        return "prompting"

    def params(self, tools: list | None = None) -> dict[str, Any]:
        """The request parameters besides model and messages (part of the cache key); ``tools``: the example's
        functions, sent with the candidate's ``tool_choice``."""
        out: dict[str, Any] = {"temperature": self.temperature}
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        if self.response_format is not None:
            out["response_format"] = self.response_format
        if tools:
            out["tools"] = tools
            if self.tool_choice is not None:
                out["tool_choice"] = self.tool_choice
        return out

    def resolved(self) -> dict[str, Any]:
        """The candidate as saved beside results: every field, the key redacted."""
        data = asdict(self)
        data["api_key"] = "***" if self.api_key else None
        data["role"] = self.role
        return data


_KNOWN = {f.name for f in fields(Candidate)} | {"system_prompt_file", "few_shot_file", "api_key_env"}


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist.", hint="Fix the path (relative paths are read from "
                         "the candidates file's directory).") from None


def load_few_shot(path: str | os.PathLike) -> list[dict]:
    """Few-shot turns from a chat JSONL file: each example's user/assistant messages, in order."""
    path = Path(path)
    turns: list[dict] = []
    for n, line in enumerate(_read_text(path, "Few-shot file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
            messages = example["messages"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UsageError(f"Few-shot file {path}, line {n}: not a chat example ({{\"messages\": [...]}}).",
                             hint="Use the same chat JSONL format as the training data.") from None
        turns += [{"role": m["role"], "content": m["content"]} for m in messages
                  if m.get("role") in ("user", "assistant")]
    return turns


def json_schema_format(schema: dict, name: str = "answer") -> dict:
    """An OpenAI structured-outputs ``response_format`` for a JSON Schema."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def candidate_from_dict(raw: dict, base_dir: Path | None = None, schema: dict | None = None,
                        index: int = 0) -> Candidate:
    """Build one candidate from a mapping (a candidates-file entry); paths relative to ``base_dir``."""
    where = f"candidate {index + 1}" + (f" ('{raw['name']}')" if isinstance(raw, dict) and "name" in raw else "")
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a mapping of fields, not {type(raw).__name__}.")
    unknown = set(raw) - _KNOWN
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}.",
                         hint="Known fields: " + ", ".join(sorted(_KNOWN)) + ".")
    if not raw.get("model"):
        raise UsageError(f"{where} has no model.", hint="Give each candidate a `model:`.")
    base_dir = base_dir or Path.cwd()
    data = dict(raw)
    for key in ("model", "base_url", "price_model"):
        # ${VAR} lets one file name a model known only later (the fine-tuned id a job prints).
        if isinstance(data.get(key), str) and "$" in data[key]:
            expanded = os.path.expandvars(data[key])
            unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
            if unset:
                raise UsageError(f"{where}: {key} {data[key]!r} names environment variable {unset[0]}, "
                                 "which is not set.", hint=f"export {unset[0]}=... (e.g. the job's "
                                 "fine_tuned_model) or write the value out.")
            data[key] = expanded
    data.setdefault("name", str(data["model"]).replace(":", "-"))
    if "system_prompt_file" in data:
        if data.get("system_prompt") is not None:
            raise UsageError(f"{where}: give system_prompt or system_prompt_file, not both.")
        data["system_prompt"] = _read_text(base_dir / data.pop("system_prompt_file"), "System prompt file").strip()
    few_shot = data.pop("few_shot_file", None) or data.get("few_shot")
    if isinstance(few_shot, str):
        data["few_shot"] = load_few_shot(base_dir / few_shot)
    elif few_shot is None:
        data["few_shot"] = []
    elif not isinstance(few_shot, list) or not all(isinstance(m, dict) and "role" in m for m in few_shot):
        raise UsageError(f"{where}: few_shot must be a JSONL path or a list of {{role, content}} messages.")
    else:
        data["few_shot"] = few_shot
    rf = data.get("response_format")
    if rf == SCHEMA_SHORTHAND or rf == {"type": SCHEMA_SHORTHAND}:
        if schema is None:
            raise UsageError(f"{where}: response_format 'schema' needs a schema.",
                             hint="Pass --schema SCHEMA.json, or write the response_format out in full.")
        data["response_format"] = json_schema_format(schema)
    elif rf is not None and not (isinstance(rf, dict) and "type" in rf):
        raise UsageError(f"{where}: response_format must be 'schema' or an OpenAI response_format mapping "
                         f"({{type: json_schema, json_schema: ...}}), not {rf!r}.")
    if not _NAME_RE.match(str(data["name"])):
        raise UsageError(f"{where}: name {data['name']!r} may hold only letters, digits and ._-+.")
    if data.get("kind") not in (None, "prompting", "structured", "fine-tuned"):
        raise UsageError(f"{where}: kind must be prompting, structured or fine-tuned, not {data['kind']!r}.")
    try:
        data["temperature"] = float(data.get("temperature", 0.0))
        if data.get("max_tokens") is not None:
            data["max_tokens"] = int(data["max_tokens"])
    except (TypeError, ValueError):
        raise UsageError(f"{where}: temperature must be a number and max_tokens an integer.") from None
    data["model"] = str(data["model"])
    data["name"] = str(data["name"])
    return Candidate(**data)


def load_candidates(path: str | os.PathLike, schema: dict | None = None) -> list[Candidate]:
    """Candidates from a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file with a ``candidates`` list."""
    path = Path(path)
    text = _read_text(path, "Candidates file")
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            raw = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"Candidates file {path} does not parse: {exc}".rstrip(".") + ".") from None
    items = raw.get("candidates") if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise UsageError(f"Candidates file {path} has no candidates.",
                         hint="Write a `candidates:` list (YAML) or `[[candidates]]` tables (TOML).")
    candidates = [candidate_from_dict(item, path.parent, schema, i) for i, item in enumerate(items)]
    check_unique(candidates)
    return candidates


def parse_candidate_flag(spec: str, schema: dict | None = None) -> Candidate:
    """``NAME=MODEL[:PROMPT_FILE]`` (``--candidate``); a model may itself contain ':' (``ft:...``).

    The prompt file is the part after the last ':' when it names an existing file.
    """
    if "=" not in spec:
        raise UsageError(f"--candidate {spec!r} must look like NAME=MODEL[:PROMPT_FILE].")
    name, rest = spec.split("=", 1)
    model, prompt = rest, None
    if ":" in rest:
        head, tail = rest.rsplit(":", 1)
        if tail and Path(tail).expanduser().is_file():
            model, prompt = head, tail
    raw: dict[str, Any] = {"name": name, "model": model}
    if prompt:
        raw["system_prompt_file"] = str(Path(prompt).expanduser().resolve())
    return candidate_from_dict(raw, Path.cwd(), schema)


def check_unique(candidates: list[Candidate]) -> None:
    seen: set[str] = set()
    for c in candidates:
        if c.name in seen:
            raise UsageError(f"Two candidates are named '{c.name}'.", hint="Give each candidate its own name.")
        seen.add(c.name)


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str
    source: str
    """Where the endpoint came from (``candidate``, ``environment``, ``credentials.json``, ``openai``)."""


def resolve_endpoint(candidate: Candidate) -> Endpoint:
    """Where to send a candidate's requests, and with which key."""
    key = candidate.api_key
    if key is None and candidate.api_key_env:
        key = os.environ.get(candidate.api_key_env)
        if key is None:
            raise UsageError(f"Candidate '{candidate.name}': environment variable {candidate.api_key_env} "
                             "is not set.", hint=f"export {candidate.api_key_env}=... or set api_key_env to "
                             "another variable.")
    if candidate.base_url:
        return Endpoint(candidate.base_url, key or os.environ.get("OPENAI_API_KEY") or "none", "candidate")
    if os.environ.get("OPENAI_BASE_URL"):
        return Endpoint(os.environ["OPENAI_BASE_URL"], key or os.environ.get("OPENAI_API_KEY") or "none",
                        "environment")
    creds = paths.read_credentials()
    if creds is not None:
        return Endpoint(creds["base_url"], key or creds.get("api_key") or "none", "credentials.json")
    if key or os.environ.get("OPENAI_API_KEY"):
        return Endpoint(OPENAI_BASE_URL, key or os.environ["OPENAI_API_KEY"], "openai")
    raise UsageError(f"Candidate '{candidate.name}' has no endpoint.",
                     hint="Start the local server (`tunewise serve`), set OPENAI_BASE_URL and OPENAI_API_KEY, "
                     "or give the candidate base_url and api_key_env.")
