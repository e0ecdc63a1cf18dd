"""Constrained decoding for ``response_format``: xgrammar compiles the format into a token-level grammar.

Each constrained sequence owns a ``GrammarMatcher``. Before sampling, the matcher writes the set of allowed next
tokens into that row of a bitmask and the other tokens' logits become -inf; after sampling, the matcher accepts the
token. Once the JSON value is complete, the grammar allows only the end-of-turn token, so the answer always parses
(unless ``max_tokens`` cuts it, which ``finish_reason: "length"`` reports, as OpenAI does).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from tunewise.errors import UsageError

# Bounds on a response_format schema, OpenAI's own for structured outputs where it publishes one: a schema
# within them compiles in well under a second; a 100,000-value enum took minutes and hundreds of MB.
MAX_SCHEMA_DEPTH = 64
"""Deepest nesting of objects and arrays in the schema's JSON (OpenAI allows 10 levels of object nesting)."""
MAX_SCHEMA_PROPERTIES = 5000
"""Object properties in the whole schema (OpenAI's limit)."""
MAX_SCHEMA_ENUM_VALUES = 1000
"""``enum`` values in the whole schema (OpenAI's limit)."""
MAX_SCHEMA_CHARS = 120_000
"""Characters of all property names, enum and const values together (OpenAI's limit)."""
MAX_SCHEMA_BYTES = 1 << 20
"""The schema's size as JSON."""
COMPILE_TIMEOUT_S = 20.0
"""A schema within the bounds above that still takes longer than this to compile is refused (400)."""
CACHE_LIMIT_BYTES = 64 << 20
"""Memory the compiled-grammar cache may hold per tokenizer; the least recently used grammars go first."""


def check_schema_bounds(schema: Any, param: str = "response_format") -> None:
    """Refuse (``UsageError`` naming ``param``) a schema too deep or too large to compile in bounded time and
    memory; walks the schema without recursion, so a schema nested thousands of levels is refused too."""
    def refuse(what: str, hint: str) -> None:
        raise UsageError(f"{param}: the JSON schema {what}.", hint=hint, param=param)

    properties = enums = chars = 0
    stack = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            refuse(f"nests more than {MAX_SCHEMA_DEPTH} levels deep", "Flatten the schema (OpenAI allows 10 "
                   "levels of object nesting).")
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                properties += len(props)
                chars += sum(len(str(k)) for k in props)
            enum = node.get("enum")
            if isinstance(enum, list):
                enums += len(enum)
                chars += sum(len(v) if isinstance(v, str) else 8 for v in enum)
            if isinstance(node.get("const"), str):
                chars += len(node["const"])
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
        if properties > MAX_SCHEMA_PROPERTIES:
            refuse(f"has more than {MAX_SCHEMA_PROPERTIES} object properties", "Split the task or simplify "
                   "the schema (OpenAI's limit is the same).")
        if enums > MAX_SCHEMA_ENUM_VALUES:
            refuse(f"has more than {MAX_SCHEMA_ENUM_VALUES} enum values in all", "Use a string property "
                   "instead of a huge enum (OpenAI's limit is the same).")
        if chars > MAX_SCHEMA_CHARS:
            refuse(f"has more than {MAX_SCHEMA_CHARS:,} characters of property names and enum/const values",
                   "Shorten the names and values (OpenAI's limit is the same).")
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError, RecursionError):
        refuse("cannot be written as JSON", "Send the schema as a plain JSON object.")
    if size > MAX_SCHEMA_BYTES:
        refuse(f"is {size:,} bytes as JSON; the limit is {MAX_SCHEMA_BYTES:,}", "Simplify the schema.")


class Grammars:
    """Compiles ``response_format`` objects for one tokenizer; the compiler caches compiled grammars, up to
    ``cache_limit_bytes`` of them (least recently used out first)."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int], *,
                 cache_limit_bytes: int = CACHE_LIMIT_BYTES, compile_timeout_s: float = COMPILE_TIMEOUT_S) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_ids = stop_ids
        self.cache_limit_bytes = cache_limit_bytes
        self.compile_timeout_s = compile_timeout_s
        self._compiler = None
        self._lock = threading.Lock()

    def _get_compiler(self):
        import xgrammar as xgr

        with self._lock:
            if self._compiler is None:
                # vocab_size is the model's (the logits' width), which can exceed the tokenizer's.
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                          stop_token_ids=self.stop_ids)
                self._compiler = xgr.GrammarCompiler(info, max_threads=1,
                                                     cache_limit_bytes=self.cache_limit_bytes)
            return self._compiler

    def compile(self, response_format: dict[str, Any] | None):
        """The compiled grammar for ``response_format``, or ``None`` when decoding is free."""
        if response_format is None:
            return None
        if not isinstance(response_format, dict) or "type" not in response_format:
            raise UsageError("response_format must be an object with a 'type'.",
                             hint='Use {"type": "json_object"} or {"type": "json_schema", "json_schema": '
                             '{"name": ..., "schema": {...}}}.', param="response_format")
        kind = response_format["type"]
        if kind == "text":
            return None
        if kind == "json_object":
            # Any JSON object, laid out like json.dumps: the same grammar as a schema of {"type": "object"} that
            # allows any properties. (xgrammar's built-in JSON grammar allows unbounded whitespace, where a small
            # model can stay forever.)
            return self._get_compiler().compile_json_schema('{"type": "object"}', any_whitespace=False,
                                                            strict_mode=False)
        if kind != "json_schema":
            raise UsageError(f"response_format type '{kind}' is not supported.",
                             hint="Use 'text', 'json_object' or 'json_schema'.", param="response_format")
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise UsageError("response_format.json_schema must be an object with a 'schema' object.",
                             hint='Example: {"type": "json_schema", "json_schema": {"name": "answer", '
                             '"schema": {"type": "object", "properties": {...}}}}', param="response_format")
        schema = spec["schema"]
        check_schema_bounds(schema)
        _check_schema(schema)
        try:
            # any_whitespace=False: the answer is laid out like json.dumps (", " and ": "), so a model cannot
            # wander off into endless whitespace; strict_mode keeps properties to those the schema names,
            # as OpenAI's strict structured outputs do.
            return self._bounded(lambda: self._get_compiler().compile_json_schema(
                json.dumps(schema), any_whitespace=False, strict_mode=True))
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"response_format.json_schema.schema cannot be used for constrained decoding: "
                             f"{_strip_location(detail)}",
                             hint="Use a JSON Schema with supported types (object, array, string, number, "
                             "integer, boolean, null, enum, const) and resolvable $refs.",
                             param="response_format") from exc

    def compile_structural_tag(self, spec: dict[str, Any], param: str = "tools"):
        """The compiled grammar of an xgrammar structural tag (the tool calls: ``tunewise.infer.tools``)."""
        try:
            return self._bounded(lambda: self._get_compiler().compile_structural_tag(json.dumps(spec)))
        except (RuntimeError, ValueError) as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"The functions' parameters cannot be used for constrained decoding: "
                             f"{_strip_location(detail)}", param=param,
                             hint="Use JSON Schemas with supported types (object, array, string, number, "
                             "integer, boolean, null, enum, const) and resolvable $refs.") from exc

    def _bounded(self, compile_):
        """Run ``compile_`` in a helper thread; refuse the schema if it takes over ``compile_timeout_s``. (The
        native compile cannot be interrupted: it finishes in the background, bounded by the size limits.)"""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = compile_()
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=run, name="grammar-compile", daemon=True)
        thread.start()
        thread.join(self.compile_timeout_s)
        if thread.is_alive():
            raise UsageError(f"response_format: the JSON schema took longer than {self.compile_timeout_s:g} s to "
                             "compile for constrained decoding.", hint="Simplify the schema (fewer enum values, "
                             "properties or alternatives).", param="response_format")
        if "error" in box:
            raise box["error"]
        return box["value"]


def _check_schema(schema: dict[str, Any]) -> None:
    """Reject a schema that is not valid JSON Schema before compiling it, with jsonschema's own explanation."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except RecursionError:  # check_schema_bounds runs first; this is a last guard
        raise UsageError("response_format.json_schema.schema nests too deep.", param="response_format") from None
    except jsonschema.SchemaError as exc:
        raise UsageError(f"response_format.json_schema.schema is not a valid JSON Schema: {exc.message}",
                         hint="Check the schema against https://json-schema.org (e.g. 'type' must be one of "
                         "object, array, string, number, integer, boolean, null).",
                         param="response_format") from exc


def _strip_location(message: str) -> str:
    # xgrammar prefixes its messages with "[time] file.cc:line: "; users need only the reason.
    if "] " in message and ".cc:" in message:
        message = message.split(".cc:", 1)[1]
        message = message.split(": ", 1)[1] if ": " in message else message
    return message.strip()


def new_matcher(compiled, stop_ids: list[int]):
    import xgrammar as xgr

    return xgr.GrammarMatcher(compiled, override_stop_tokens=stop_ids)
