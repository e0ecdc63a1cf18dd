"""The model catalog: encodings, training context limits and prices, from one data file users can update.

The package ships ``catalog.toml``; a user file (``prices=`` argument, ``--prices FILE`` or ``$TUNEWISE_PRICES``)
overrides it field by field and may add models. Prices are USD per 1M tokens.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path

from tunewise.errors import ModelNotFound, UsageError

# The training data formats OpenAI accepts: chat ``{"messages": [...]}`` for the chat models, and the legacy
# ``{"prompt": ..., "completion": ...}`` for babbage-002 and davinci-002.
CHAT = "chat"
PROMPT_COMPLETION = "prompt_completion"
TRAINING_FORMATS = (CHAT, PROMPT_COMPLETION)
# OpenAI's preference format for DPO (``{"input": {"messages": [...]}, "preferred_output": [...],
# "non_preferred_output": [...]}``): a method's format, not a model's, so no catalog entry names it.
PREFERENCE = "preference"
# Reinforcement fine-tuning's: chat messages that end with the turn to answer, and whatever fields the grader reads.
REINFORCEMENT = "reinforcement"
DATA_FORMATS = (*TRAINING_FORMATS, PREFERENCE, REINFORCEMENT)

PRICE_FIELDS = ("training", "input", "cached_input", "output", "ft_input", "ft_cached_input", "ft_output")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    """Canonical model name (a dated snapshot for OpenAI models)."""
    provider: str
    """``openai`` or ``local``."""
    encoding: str
    """Token encoding: ``o200k_base``, ``cl100k_base``, or ``hf:<registry name>`` for local models."""
    context_limit: int
    """Longest training example accepted, in tokens."""
    training: float
    """Training price, USD per 1M training tokens (tokens x epochs)."""
    input: float
    """Base model input price, USD per 1M tokens."""
    output: float
    """Base model output price, USD per 1M tokens."""
    ft_input: float
    """Fine-tuned model input price, USD per 1M tokens."""
    ft_output: float
    """Fine-tuned model output price, USD per 1M tokens."""
    cached_input: float | None = None
    """Base model cached-input price (a prompt prefix served from OpenAI's prompt cache), USD per 1M tokens
    (None where OpenAI offers no cache discount)."""
    ft_cached_input: float | None = None
    """Fine-tuned model cached-input price, USD per 1M tokens (None where OpenAI offers no cache discount)."""
    aliases: tuple[str, ...] = ()
    """Other names that mean this model (``gpt-4o-mini`` for ``gpt-4o-mini-2024-07-18``)."""
    checked: str = ""
    """The day the prices were last checked (ISO date)."""
    training_format: str = CHAT
    """The fine-tuning data format the model takes: ``chat`` or ``prompt_completion`` (babbage-002, davinci-002)."""

    @property
    def is_local(self) -> bool:
        return self.provider == "local"


@dataclass(frozen=True)
class Catalog:
    models: dict[str, ModelInfo]
    checked: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)
    """Files the catalog was read from, package file first."""

    def names(self) -> list[str]:
        return sorted(self.models)

    def get(self, name: str) -> ModelInfo:
        """The model for a name, an alias, or a fine-tuned id (``ft:BASE:...`` resolves through BASE)."""
        info = self.find(name)
        if info is None:
            raise ModelNotFound(
                f"Model '{name}' is not in the catalog.",
                hint="Known models: " + ", ".join(self.names())
                + ". Add it to a prices file (--prices FILE or TUNEWISE_PRICES).",
                param="model",
            )
        return info

    def find(self, name: str) -> ModelInfo | None:
        name = base_model_name(name)
        if name in self.models:
            return self.models[name]
        for info in self.models.values():
            if name in info.aliases:
                return info
        return None


def base_model_name(name: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:org:suffix:id[:ckpt-step-N]`` -> ``gpt-4o-mini-2024-07-18``."""
    name = name.strip()
    if name.startswith("ft:"):
        return name.split(":")[1]
    return name


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"Prices file {path} does not exist.",
                         hint="Pass an existing TOML file to --prices or TUNEWISE_PRICES.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"Prices file {path} is not valid TOML: {exc}.",
                         hint="See the package's catalog.toml for the expected shape.") from None


def _merge(base: dict, override: dict, source: str) -> dict:
    merged = {name: dict(entry) for name, entry in base.get("models", {}).items()}
    known = {f.name for f in fields(ModelInfo)} - {"name"}
    for name, entry in override.get("models", {}).items():
        if not isinstance(entry, dict):
            raise UsageError(f"{source}: [models.\"{name}\"] must be a table of fields.")
        unknown = set(entry) - known
        if unknown:
            raise UsageError(f"{source}: model '{name}' has unknown field(s) {', '.join(sorted(unknown))}.",
                             hint="Known fields: " + ", ".join(sorted(known)) + ".")
        merged.setdefault(name, {}).update(entry)
    out = {"models": merged, "checked": override.get("checked", base.get("checked", ""))}
    return out


def _build(raw: dict, sources: tuple[str, ...]) -> Catalog:
    models: dict[str, ModelInfo] = {}
    for name, entry in raw["models"].items():
        missing = [f for f in ("provider", "encoding", "context_limit", "training", "input", "output",
                               "ft_input", "ft_output") if f not in entry]
        if missing:
            raise UsageError(f"Catalog model '{name}' lacks {', '.join(missing)}.",
                             hint="A new model needs every field; an override of a known model may give only some.")
        for key in PRICE_FIELDS + ("context_limit",):
            value = entry.get(key)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise UsageError(f"Catalog model '{name}': {key} must be a non-negative number, not {value!r}.")
        fmt = entry.get("training_format", CHAT)
        if fmt not in TRAINING_FORMATS:
            raise UsageError(f"Catalog model '{name}': training_format must be one of {', '.join(TRAINING_FORMATS)}, "
                             f"not {fmt!r}.", hint="chat for {\"messages\": [...]} data, prompt_completion for "
                             "{\"prompt\": ..., \"completion\": ...}.")
        models[name] = ModelInfo(
            name=name,
            provider=entry["provider"],
            encoding=entry["encoding"],
            context_limit=int(entry["context_limit"]),
            training=float(entry["training"]),
            input=float(entry["input"]),
            output=float(entry["output"]),
            ft_input=float(entry["ft_input"]),
            ft_output=float(entry["ft_output"]),
            cached_input=None if entry.get("cached_input") is None else float(entry["cached_input"]),
            ft_cached_input=None if entry.get("ft_cached_input") is None else float(entry["ft_cached_input"]),
            aliases=tuple(entry.get("aliases", ())),
            checked=str(entry.get("checked", raw.get("checked", ""))),
            training_format=fmt,
        )
    return Catalog(models=models, checked=str(raw.get("checked", "")), sources=sources)


@lru_cache(maxsize=8)
def _load(prices: str | None) -> Catalog:
    package_file = resources.files("tunewise") / "catalog.toml"
    raw = tomllib.loads(package_file.read_text(encoding="utf-8"))
    sources = [str(package_file)]
    if prices:
        path = Path(prices).expanduser()
        raw = _merge(raw, _read_toml(path), str(path))
        sources.append(str(path))
    return _build(raw, tuple(sources))


def load_catalog(prices: str | os.PathLike | None = None) -> Catalog:
    """The catalog: the package's file, overridden by ``prices`` or else ``$TUNEWISE_PRICES``."""
    prices = prices or os.environ.get("TUNEWISE_PRICES") or None
    return _load(str(prices) if prices else None)


def get_model(name: str, prices: str | os.PathLike | None = None) -> ModelInfo:
    """Shortcut for ``load_catalog(prices).get(name)``."""
    return load_catalog(prices).get(name)
