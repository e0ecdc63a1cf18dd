"""Grader objects in OpenAI's shapes (the ``Grader*`` schemas of OpenAI's API), checked field by field.

``parse_grader(obj)`` returns a :class:`Grader` or raises :class:`GraderError` naming the field
(``graders[1].input[0].content``), what is wrong and how to fix it. ``load_graders(path)`` reads one grader,
a list, or ``{"graders": [...]}`` / ``{"graders": {name: grader}}`` from YAML or JSON.
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import LocalFileNotFound, UsageError
from tunewise.eval.graders import formula, templates
from tunewise.eval.graders.similarity import METRICS

TYPES = ("string_check", "text_similarity", "score_model", "label_model", "python", "multi")
OPERATIONS = ("eq", "ne", "like", "ilike")
ROLES = ("user", "assistant", "system", "developer")
TEXT_CONTENT = ("input_text", "output_text")
SAMPLING_PARAMS = ("seed", "top_p", "temperature", "max_completions_tokens", "reasoning_effort")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

MAX_SOURCE_BYTES = 256 * 1024  # OpenAI's limit on a python grader's source

# Keys each type takes besides ``type`` and ``name`` (required, optional). ``pass_threshold`` is the Evals
# API's pass mark for the graders that give a continuous score.
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "string_check": (("input", "reference", "operation"), ()),
    "text_similarity": (("input", "reference", "evaluation_metric"), ("pass_threshold",)),
    "score_model": (("model", "input"), ("range", "sampling_params", "pass_threshold")),
    "label_model": (("model", "input", "labels", "passing_labels"), ("sampling_params",)),
    "python": (("source",), ("image_tag", "pass_threshold")),
    "multi": (("graders", "calculate_output"), ()),
}


class GraderError(UsageError):
    """A grader object that does not match OpenAI's schema; ``param`` is the field's path."""


@dataclass
class Grader:
    """One checked grader: ``spec`` is the object as given (OpenAI's shape); ``children`` for ``multi``."""

    spec: dict[str, Any]
    children: dict[str, Grader] = field(default_factory=dict)
    formula: ast.Expression | None = None

    @property
    def type(self) -> str:
        return self.spec["type"]

    @property
    def name(self) -> str:
        return self.spec["name"]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.spec))

    @property
    def uses_model(self) -> bool:
        return self.type in ("score_model", "label_model") or any(c.uses_model for c in self.children.values())

    @property
    def uses_python(self) -> bool:
        return self.type == "python" or any(c.uses_python for c in self.children.values())


def _fail(where: str, message: str, hint: str | None = None) -> GraderError:
    return GraderError(f"{where}: {message}", hint=hint, param=where, code="invalid_grader")


def _string(obj: dict, key: str, where: str, *, allow_empty: bool = False) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise _fail(f"{where}.{key}", f"must be a string, not {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise _fail(f"{where}.{key}", "must not be empty")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"must be a number, not {json.dumps(value)[:40]}")
    return float(value)


def _template(obj: dict, key: str, where: str, namespaces: tuple[str, ...] = templates.NAMESPACES) -> None:
    text = _string(obj, key, where, allow_empty=True)
    try:
        templates.check(text, f"{where}.{key}", namespaces)
    except templates.TemplateError as exc:
        raise _fail(f"{where}.{key}", str(exc).split(": ", 1)[-1],
                    hint="References are {{ item.FIELD }}, {{ sample.output_text }} or "
                    "{{ sample.output_json.FIELD }}.") from None


def _messages(obj: dict, where: str, namespaces: tuple[str, ...] = templates.NAMESPACES) -> None:
    messages = obj["input"]
    if not isinstance(messages, list) or not messages:
        raise _fail(f"{where}.input", "must be a non-empty list of messages ({role, content})")
    for i, message in enumerate(messages):
        at = f"{where}.input[{i}]"
        if not isinstance(message, dict):
            raise _fail(at, "must be an object with role and content")
        unknown = set(message) - {"role", "content", "type"}
        if unknown:
            raise _fail(at, f"unknown key(s) {', '.join(sorted(unknown))}; a message has role, content, type")
        if message.get("type", "message") != "message":
            raise _fail(f"{at}.type", f"must be 'message', not {message.get('type')!r}")
        if message.get("role") not in ROLES:
            raise _fail(f"{at}.role", f"must be one of {', '.join(ROLES)}, not {message.get('role')!r}")
        if "content" not in message:
            raise _fail(at, "has no content")
        content = message["content"]
        parts = content if isinstance(content, list) else [content]
        if isinstance(content, list) and not content:
            raise _fail(f"{at}.content", "must not be an empty list")
        for j, part in enumerate(parts):
            pat = f"{at}.content" + (f"[{j}]" if isinstance(content, list) else "")
            if isinstance(part, str):
                try:
                    templates.check(part, pat, namespaces)
                except templates.TemplateError as exc:
                    raise _fail(pat, str(exc).split(": ", 1)[-1]) from None
                continue
            if not isinstance(part, dict):
                raise _fail(pat, "must be a string or a content object ({type: input_text, text})")
            kind = part.get("type")
            if kind in ("input_image", "input_audio"):
                raise _fail(f"{pat}.type", f"{kind} content is not supported: tunewise's judges read text",
                            hint="Describe the image or audio in text, or grade it with another service.")
            if kind not in TEXT_CONTENT:
                raise _fail(f"{pat}.type", f"must be input_text or output_text, not {kind!r}")
            if "text" not in part:
                raise _fail(pat, "has no text")
            _template(part, "text", pat, namespaces)


def _sampling(obj: dict, where: str) -> None:
    params = obj.get("sampling_params")
    if params is None:
        return
    at = f"{where}.sampling_params"
    if not isinstance(params, dict):
        raise _fail(at, "must be an object")
    unknown = set(params) - set(SAMPLING_PARAMS)
    if unknown:
        raise _fail(at, f"unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(SAMPLING_PARAMS)})")
    for key in ("top_p", "temperature"):
        if params.get(key) is not None:
            _number(params[key], f"{at}.{key}")
    for key in ("seed", "max_completions_tokens"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _fail(f"{at}.{key}", "must be an integer")
    if params.get("max_completions_tokens") is not None and params["max_completions_tokens"] < 1:
        raise _fail(f"{at}.max_completions_tokens", "must be at least 1")
    effort = params.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        raise _fail(f"{at}.reasoning_effort", f"must be one of {', '.join(REASONING_EFFORTS)}")


def _python_source(obj: dict, where: str) -> None:
    source = _string(obj, "source", where)
    size = len(source.encode("utf-8"))
    if size > MAX_SOURCE_BYTES:
        raise _fail(f"{where}.source", f"is {size:,} bytes; a python grader's source must be under "
                    f"{MAX_SOURCE_BYTES // 1024} kB (OpenAI's limit)")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise _fail(f"{where}.source", f"is not valid Python: {exc.msg} on line {exc.lineno}") from None
    grade = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "grade"]
    if not grade:
        raise _fail(f"{where}.source", "defines no top-level function grade(sample, item)",
                    hint="Write def grade(sample: dict, item: dict) -> float: ...")
    args = grade[-1].args
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    required_kw = sum(d is None for d in args.kw_defaults)
    if (positional < 2 and args.vararg is None) or required > 2 or required_kw:
        raise _fail(f"{where}.source", "grade() must take exactly two arguments: grade(sample, item)")
    if obj.get("image_tag") is not None and not isinstance(obj["image_tag"], str):
        raise _fail(f"{where}.image_tag", "must be a string")


def _children(obj: dict, where: str) -> dict[str, Grader]:
    """``graders`` as OpenAI's schema gives it (one grader), as its example does (a list), or as its
    guide does (an object of name -> grader); the keys (or names) are the formula's variables."""
    raw = obj["graders"]
    at = f"{where}.graders"
    if isinstance(raw, dict) and "type" in raw and isinstance(raw.get("type"), str):
        items = [(None, raw, at)]
    elif isinstance(raw, dict):
        if not raw:
            raise _fail(at, "must not be empty")
        # As in a graders file, a sub-grader under a key may leave out its name: the key is its name.
        items = [(str(k), {**v, "name": str(k)} if isinstance(v, dict) and "name" not in v else v, f"{at}.{k}")
                 for k, v in raw.items()]
    elif isinstance(raw, list):
        if not raw:
            raise _fail(at, "must not be empty")
        items = [(None, v, f"{at}[{i}]") for i, v in enumerate(raw)]
    else:
        raise _fail(at, "must be a grader, a list of graders or an object of name -> grader")
    children: dict[str, Grader] = {}
    for key, value, child_where in items:
        if isinstance(value, dict) and value.get("type") == "multi":
            raise _fail(f"{child_where}.type", "a multi grader cannot contain another multi grader")
        child = _parse(value, child_where)
        name = key or child.name
        if name in children:
            raise _fail(child_where, f"two sub-graders are called '{name}'", hint="Give each a distinct name.")
        children[name] = child
    return children


def _variables(children: dict[str, Grader]) -> dict[str, str]:
    """Formula variable -> child key: each key that is an identifier, each child's name that is one, and
    ``<type>_score`` where one child has that type (the form of OpenAI's own example)."""
    names: dict[str, str] = {}
    for key, child in children.items():
        for candidate in (key, child.name):
            if candidate.isidentifier() and candidate not in formula.FUNCTIONS:
                names.setdefault(candidate, key)
    types = [c.type for c in children.values()]
    for key, child in children.items():
        if types.count(child.type) == 1:
            names.setdefault(f"{child.type}_score", key)
    return names


def _parse(obj: Any, where: str) -> Grader:
    if not isinstance(obj, dict):
        raise _fail(where, f"a grader is an object with type and name, not {type(obj).__name__}")
    kind = obj.get("type")
    if kind not in TYPES:
        raise _fail(f"{where}.type", f"must be one of {', '.join(TYPES)}, not {kind!r}" if kind is not None
                    else f"is missing (one of {', '.join(TYPES)})")
    required, optional = FIELDS[kind]
    missing = [k for k in ("name", *required) if k not in obj]
    if missing:
        raise _fail(f"{where}.{missing[0]}", f"is missing (a {kind} grader needs "
                    f"{', '.join(('type', 'name', *required))})")
    unknown = set(obj) - {"type", "name", *required, *optional}
    if unknown:
        raise _fail(f"{where}.{sorted(unknown)[0]}", f"is not a field of a {kind} grader (it takes "
                    f"{', '.join(('type', 'name', *required, *optional))})")
    _string(obj, "name", where)
    if "pass_threshold" in obj:
        _number(obj["pass_threshold"], f"{where}.pass_threshold")
    grader = Grader(spec=obj)
    if kind in ("string_check", "text_similarity"):
        _template(obj, "input", where)
        _template(obj, "reference", where)
    if kind == "string_check" and obj["operation"] not in OPERATIONS:
        raise _fail(f"{where}.operation", f"must be one of {', '.join(OPERATIONS)}, not {obj['operation']!r}")
    if kind == "text_similarity" and obj["evaluation_metric"] not in METRICS:
        raise _fail(f"{where}.evaluation_metric",
                    f"must be one of {', '.join(METRICS)}, not {obj['evaluation_metric']!r}")
    if kind in ("score_model", "label_model"):
        _string(obj, "model", where)
        _messages(obj, where)
    if kind in ("score_model", "label_model"):
        _sampling(obj, where)
    if kind == "score_model":
        if "range" in obj:
            rng = obj["range"]
            if not isinstance(rng, list) or len(rng) != 2:
                raise _fail(f"{where}.range", "must be two numbers [low, high]")
            lo, hi = (_number(v, f"{where}.range[{i}]") for i, v in enumerate(rng))
            if not lo < hi:
                raise _fail(f"{where}.range", f"low ({lo:g}) must be less than high ({hi:g})")
    if kind == "label_model":
        labels, passing = obj["labels"], obj["passing_labels"]
        for key, value in (("labels", labels), ("passing_labels", passing)):
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise _fail(f"{where}.{key}", "must be a non-empty list of non-empty strings")
        if len(set(labels)) != len(labels):
            raise _fail(f"{where}.labels", "has a label twice")
        stray = [p for p in passing if p not in labels]
        if stray:
            raise _fail(f"{where}.passing_labels", f"{stray[0]!r} is not one of the labels ({', '.join(labels)})")
    if kind == "python":
        _python_source(obj, where)
    if kind == "multi":
        grader.children = _children(obj, where)
        if not isinstance(obj["calculate_output"], str):
            raise _fail(f"{where}.calculate_output", "must be a string (a formula of the sub-graders' names)")
        variables = _variables(grader.children)
        try:
            grader.formula = formula.parse(obj["calculate_output"], set(variables))
        except formula.FormulaError as exc:
            raise _fail(f"{where}.calculate_output", str(exc),
                        hint="Combine the sub-graders by name with + - * / ^ and min, max, abs, floor, ceil, "
                        "exp, sqrt, log, round, clip.") from None
    return grader


def parse_grader(obj: Any, where: str = "grader") -> Grader:
    """Check one grader object (OpenAI's shape); raises :class:`GraderError` naming the field."""
    return _parse(obj, where)


def parse_graders(obj: Any, where: str = "graders") -> list[Grader]:
    """One grader, a list, ``{"graders": [...]}`` or ``{"graders": {name: grader}}``; names must differ."""
    if isinstance(obj, dict) and "graders" in obj and "type" not in obj:
        extra = set(obj) - {"graders"}
        if extra:
            raise _fail(f"{sorted(extra)[0]}", "is not a key of a graders file (it has one key: graders)")
        inner = obj["graders"]
        if isinstance(inner, dict):
            graders = []
            for key, value in inner.items():
                if isinstance(value, dict) and "name" not in value:
                    value = {**value, "name": str(key)}
                graders.append(_parse(value, f"graders.{key}"))
        elif isinstance(inner, list):
            graders = [_parse(v, f"graders[{i}]") for i, v in enumerate(inner)]
        else:
            raise _fail("graders", "must be a list of graders or an object of name -> grader")
    elif isinstance(obj, list):
        graders = [_parse(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    else:
        graders = [_parse(obj, "grader")]
    if not graders:
        raise _fail(where, "there are no graders")
    seen: set[str] = set()
    for g in graders:
        if g.name in seen:
            raise _fail(where, f"two graders are called '{g.name}'", hint="Give each grader a distinct name.")
        seen.add(g.name)
    return graders


def load_graders(path: str | os.PathLike) -> list[Grader]:
    """Graders from a YAML or JSON file (one grader, a list, or a ``graders:`` mapping)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LocalFileNotFound(f"Grader file {p} does not exist.", hint="Check the path.", param="grader") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read grader file {p}: {exc}.", param="grader") from None
    try:
        obj = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
        raise UsageError(f"Grader file {p} is not valid {kind}{at}: {getattr(exc, 'problem', None) or exc}.",
                         hint="Fix the syntax; a grader file holds one grader, a list, or graders:.",
                         param="grader") from None
    if obj is None:
        raise UsageError(f"Grader file {p} is empty.", hint="Write one grader, a list, or graders:.",
                         param="grader")
    try:
        return parse_graders(obj)
    except GraderError as exc:
        raise GraderError(f"{p}: {exc.message}", hint=exc.hint, param=exc.param, code=exc.code) from None


def item_fields(grader: dict[str, Any]) -> list[str]:
    """The top-level data fields a grader's templates read (``{{ item.reference_answer }}`` -> reference_answer),
    in order of first use: what every line of the data must have."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            for ref in templates.references(value):
                try:
                    ns, steps = templates.parse_reference(ref)
                except templates.TemplateError:
                    continue
                if ns == "item" and steps and isinstance(steps[0], str) and steps[0] not in found:
                    found.append(steps[0])
        elif isinstance(value, dict):
            for key, v in value.items():
                if key != "source":  # a python grader's code is not a template
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(grader)
    return found
