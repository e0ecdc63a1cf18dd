"""Hostile JSONL lines never crash the validator: every line gets findings, never an exception.

A property-based fuzz test (hypothesis): generated JSON values, valid examples mutated byte by byte, JSON nested
past any parser's depth, integers past Python's 4300-digit limit, lone surrogates, wrong types anywhere. The
default run tries a few hundred lines in a few seconds; ``make test-all`` (TUNEWISE_SLOW=1) tries thousands.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewise.data import CODES, DataError, iter_examples, repair, validate
from tunewise.data.reading import MAX_JSON_DEPTH

VALID = {"messages": [{"role": "system", "content": "Answer in JSON."},
                      {"role": "user", "content": "Coffee $4.50"},
                      {"role": "assistant", "content": '{"items": [{"name": "Coffee", "price": 4.5}]}'}]}
TOOL_CALL = {"messages": [{"role": "user", "content": "weather?"},
                          {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                              "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                          {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                          {"role": "assistant", "content": "It is sunny."}],
             "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]}


def deep(n: int, open_: str = "[", close: str = "]") -> str:
    return open_ * n + close * n


def deep_object(n: int) -> str:
    return '{"a":' * n + "1" + "}" * n


HOSTILE = {
    "deep array": deep(1500),
    "deep object": deep_object(1500),
    "deep messages": '{"messages": ' + deep(1200) + "}",
    "deep content": '{"messages": [{"role": "user", "content": ' + deep(1200) + "}]}",
    "just past the depth limit": '{"messages": ' + deep(MAX_JSON_DEPTH + 1) + "}",
    "huge integer": '{"messages": [], "n": ' + "9" * 5000 + "}",
    "huge integer weight": '{"messages": [{"role": "assistant", "content": "x", "weight": ' + "1" * 4400 + "}]}",
    "huge negative integer": "-" + "7" * 4301,
    "huge float": '{"messages": [{"role": "assistant", "content": "x", "weight": 1e999}]}',
    "deep tool arguments": json.dumps({"messages": [{"role": "user", "content": "hi"}, {
        "role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "f", "arguments": deep(1500)}}]}]}),
    "huge integer tool arguments": json.dumps({"messages": [{"role": "user", "content": "hi"}, {
        "role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
            "name": "f", "arguments": "9" * 5000}}]}]}),
    "deep tools": '{"messages": [{"role": "user", "content": "hi"}], "tools": ' + deep(1200) + "}",
    "deep nested answer": json.dumps({"messages": [{"role": "user", "content": "x"},
                                                   {"role": "assistant", "content": deep(3000)}]}),
    "lone surrogates": '{"messages": [{"role": "user", "content": "\\ud800"}, '
                       '{"role": "assistant", "content": "\\udfff \\ud83d"}]}',
    "surrogate key": '{"\\ud800": 1, "messages": [{"role": "\\udc00", "content": "x"}]}',
    "unescaped deep nested json": '{"messages": [{"role": "assistant", "content": "' + deep_object(1500) + '"}]}',
}


def check_report(path, n_lines: int) -> None:
    report = validate(path)
    for f in report.findings:
        assert f.code in CODES and CODES[f.code][0] == f.severity, f
        assert f.line is None or 1 <= f.line <= n_lines, f
        assert isinstance(f.message, str) and f.message
    # The streaming reader either yields examples or raises the domain error, never anything else.
    try:
        for _ in iter_examples(path):
            pass
    except DataError as exc:
        assert exc.code in CODES
    repair(path, path.with_name("fixed.jsonl"))
    return report


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_line_is_a_finding_on_its_line(tmp_path, name):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(VALID) + "\n" + HOSTILE[name] + "\n", encoding="utf-8", errors="surrogatepass")
    report = check_report(path, 2)
    if name not in ("lone surrogates", "huge float", "deep nested answer"):  # valid examples
        assert [f for f in report.findings if f.line == 2 and f.severity == "error"], report.findings


def test_the_finding_names_the_limit(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([HOSTILE["deep array"], HOSTILE["huge integer"],
                               HOSTILE["deep tool arguments"]]) + "\n")
    report = validate(path)
    by_line = {f.line: f for f in report.findings if f.severity == "error" and f.line}
    assert by_line[1].code == "json_too_deep" and "200 levels" in by_line[1].message
    assert by_line[2].code == "number_too_long" and "4300 digits" in by_line[2].message
    assert by_line[3].code == "tool_arguments_invalid_json" and "levels deep" in by_line[3].message


# -- generated lines ---------------------------------------------------------------------------------------
json_leaf = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
             | st.text(max_size=20) | st.sampled_from(["system", "user", "assistant", "tool", "function", ""]))
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4)
                          | st.dictionaries(st.sampled_from(["role", "content", "messages", "tool_calls", "weight",
                                                             "name", "function", "arguments", "id", "type",
                                                             "tools", "x"]) | st.text(max_size=5), kids,
                                            max_size=4), max_leaves=20)


def _message(role, content):
    return {"role": role, "content": content}


example = st.builds(lambda msgs, extra: {"messages": msgs, **extra},
                    st.lists(st.builds(_message, st.sampled_from(["system", "user", "assistant", "tool", "bot"])
                                       | json_value, json_value), max_size=4),
                    st.dictionaries(st.sampled_from(["tools", "parallel_tool_calls", "functions", "extra"]),
                                    json_value, max_size=2))


def _mutate(data: bytes, ops: list[tuple[int, int, bytes]]) -> bytes:
    for kind, pos, blob in ops:
        pos = pos % (len(data) + 1)
        if kind == 0:
            data = data[:pos] + blob + data[pos:]  # insert
        elif kind == 1:
            data = data[:pos] + data[pos + len(blob):]  # delete
        else:
            data = data[:pos] + blob + data[pos + len(blob):]  # overwrite
    return data.replace(b"\n", b" ")


hostile_fragment = st.sampled_from([
    deep(1100).encode(), deep_object(1100).encode(), b"9" * 4400, b"-" + b"1" * 4301, b"1e999", b"NaN",
    b'"\\ud800"', b'"\\udfff"', b"\xff\xfe", b"\xed\xa0\x80", b"\x00", b'"', b"{", b"}", b"[", b"]", b",", b":",
    b"\\", b"\r", b"\xef\xbb\xbf", b'"arguments": "' + deep(1100).encode() + b'"', b"null", b"true",
]) | st.binary(max_size=8)

line = st.one_of(
    st.builds(lambda v: json.dumps(v).encode(), json_value),
    st.builds(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass"), example),
    st.builds(_mutate, st.sampled_from([json.dumps(VALID).encode(), json.dumps(TOOL_CALL).encode()]),
              st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000), hostile_fragment), min_size=1,
                       max_size=3)),
    hostile_fragment,
)

def _check_fuzzed(tmp_path, lines: list[bytes]) -> None:
    path = tmp_path / "fuzz.jsonl"
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    check_report(path, data.count(b"\n"))  # a generated fragment may hold line ends of its own


FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.function_scoped_fixture]}


@settings(max_examples=200, **FUZZ)
@given(lines=st.lists(line, min_size=1, max_size=8))
def test_fuzzed_files_give_findings_never_exceptions(tmp_path, lines):
    _check_fuzzed(tmp_path, lines)


@pytest.mark.slow
@settings(max_examples=3000, **FUZZ)
@given(lines=st.lists(line, min_size=1, max_size=8))
def test_fuzzed_files_longer_run(tmp_path, lines):
    _check_fuzzed(tmp_path, lines)
