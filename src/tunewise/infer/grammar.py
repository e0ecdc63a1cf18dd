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


class Grammars:
    """Compiles ``response_format`` objects for one tokenizer; the compiler caches compiled grammars."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_ids = stop_ids
        self._compiler = None
        self._lock = threading.Lock()

    def _get_compiler(self):
        import xgrammar as xgr

        with self._lock:
            if self._compiler is None:
                # vocab_size is the model's (the logits' width), which can exceed the tokenizer's.
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                          stop_token_ids=self.stop_ids)
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)
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
        _check_schema(schema)
        try:
            # any_whitespace=False: the answer is laid out like json.dumps (", " and ": "), so a model cannot
            # wander off into endless whitespace; strict_mode keeps properties to those the schema names,
            # as OpenAI's strict structured outputs do.
            return self._get_compiler().compile_json_schema(json.dumps(schema), any_whitespace=False,
                                                            strict_mode=True)
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"response_format.json_schema.schema cannot be used for constrained decoding: "
                             f"{_strip_location(detail)}",
                             hint="Use a JSON Schema with supported types (object, array, string, number, "
                             "integer, boolean, null, enum, const) and resolvable $refs.",
                             param="response_format") from exc


def _check_schema(schema: dict[str, Any]) -> None:
    """Reject a schema that is not valid JSON Schema before compiling it, with jsonschema's own explanation."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
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
