"""response_format schemas are bounded: size and depth before compiling, compile time, and the cache's memory."""

from __future__ import annotations

import time

import pytest

from tunewise.errors import UsageError
from tunewise.infer.grammar import (
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_ENUM_VALUES,
    Grammars,
    check_schema_bounds,
)


def deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("schema, words", [
    (deep(10_000), "levels deep"),
    ({"type": "string", "enum": [f"v{i}" for i in range(100_000)]}, "enum values"),
    ({"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5001)}}, "object properties"),
    ({"type": "string", "enum": ["x" * 130_000]}, "characters"),
])
def test_oversize_schemas_are_refused_quickly(schema, words):
    start = time.perf_counter()
    with pytest.raises(UsageError, match=words) as err:
        check_schema_bounds(schema)
    assert err.value.param == "response_format"
    assert time.perf_counter() - start < 2


def test_schemas_within_the_bounds_pass():
    check_schema_bounds(deep(MAX_SCHEMA_DEPTH // 2 - 1))
    check_schema_bounds({"type": "string", "enum": [f"v{i}" for i in range(MAX_SCHEMA_ENUM_VALUES)]})


@pytest.fixture(scope="module")
def tokenizer():
    from tunewise import models

    return models.load_tokenizer("tunewise-tiny")


def test_cache_is_bounded_by_memory(tokenizer):
    limit = 200_000  # about four of these grammars (some 52 KB each): twelve must evict
    grammars = Grammars(tokenizer, len(tokenizer), [tokenizer.eos_token_id], cache_limit_bytes=limit)
    sizes = []
    for k in range(12):  # distinct schemas
        schema = {"type": "object", "properties": {"a": {"enum": [f"value-{k}-{i}" for i in range(300)]}},
                  "required": ["a"]}
        assert grammars.compile({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
        sizes.append(grammars._get_compiler().get_cache_size_bytes())
    assert max(sizes) <= limit and sizes[-1] > 0, sizes


def test_compile_time_is_bounded(tokenizer):
    grammars = Grammars(tokenizer, len(tokenizer), [tokenizer.eos_token_id], compile_timeout_s=0.001)
    schema = {"type": "object", "properties": {f"p{i}": {"enum": [f"v{j}" for j in range(20)]} for i in range(40)},
              "required": [f"p{i}" for i in range(40)]}
    with pytest.raises(UsageError, match="longer than") as err:
        grammars.compile({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert err.value.param == "response_format"
