"""tunewise.data.validate: every rule, warning and statistic, on small real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewise import tokens
from tunewise.data import CODES, DataError, Finding, iter_examples, repair, validate
from tunewise.data.reading import escape_nested_json

FIXTURES = Path(__file__).parent / "fixtures"
SYSTEM = {"role": "system", "content": "You extract items and prices from receipts. Return JSON only."}


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def example(i: int, answer: str | None = None, system: dict | None = SYSTEM) -> dict:
    messages = [system] if system else []
    messages.append({"role": "user", "content": f"Item{i} - ${i}.50"})
    messages.append({"role": "assistant",
                     "content": answer if answer is not None else json.dumps({"items": [{"name": f"Item{i}",
                                                                                           "price": i + 0.5}]})})
    return {"messages": messages}


def write(path, rows, *, newline: str = "\n", bom: bool = False):
    """rows: dicts (dumped as JSON) or raw strings/bytes written as they are."""
    data = b"\xef\xbb\xbf" if bom else b""
    for row in rows:
        if isinstance(row, bytes):
            data += row
        elif isinstance(row, str):
            data += row.encode("utf-8")
        else:
            data += json.dumps(row, ensure_ascii=False).encode("utf-8")
        data += newline.encode()
    path.write_bytes(data)
    return path


def base(n: int = 100) -> list:
    return [example(i) for i in range(n)]


def with_line(tmp_path, row, n: int = 100, at: int = 5):
    """A clean n-example file with one extra row inserted; the row is on line ``at``."""
    rows = base(n)
    rows.insert(at - 1, row)
    return validate(write(tmp_path / "d.jsonl", rows))


# Findings about the data set as a whole; their ``line`` is the first of the lines they list.
DATASET_CODES = {"missing_system_message", "missing_user_message", "answer_format_outlier",
                 "inconsistent_system_prompt", "duplicate_example", "blank_line", "truncated"}


def codes_at(report, line: int) -> list[str]:
    """The codes of the per-line findings at ``line``."""
    return [f.code for f in report.findings if f.line == line and f.code not in DATASET_CODES]


def only(report, code: str) -> Finding:
    found = [f for f in report.findings if f.code == code]
    assert len(found) == 1, report.findings
    return found[0]


# -- a clean file and its statistics -------------------------------------------------------------------

def test_clean_file_has_no_findings_and_exact_stats(tmp_path):
    rows = base(100)
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert report.findings == [] and report.ok
    stats = report.stats
    assert stats.n_examples == 100
    assert stats.model == "gpt-4o-mini-2024-07-18" and stats.encoding == "o200k_base"
    expected = [tokens.count_messages(r["messages"], "gpt-4o-mini") for r in rows]
    assert stats.example_tokens == expected
    assert stats.billed_tokens_per_epoch == sum(expected)
    assert stats.messages_per_example.min == stats.messages_per_example.max == 3
    ref = tokens.reference_encoding("o200k_base")
    assistant = [len(ref.encode(r["messages"][-1]["content"])) for r in rows]
    assert stats.assistant_tokens_per_example.max == max(assistant)
    assert stats.assistant_tokens_per_example.mean == pytest.approx(sum(assistant) / len(assistant))
    assert stats.total_tokens_per_example.median == pytest.approx(sorted(expected)[49] / 2 + sorted(expected)[50] / 2)
    assert stats.size_band.startswith("100-999")
    json.dumps(report.to_dict())  # serialisable as it is


def test_cl100k_model_counts_differently(tmp_path):
    rows = [example(i, answer="日本語の答えです。東京タワー") for i in range(100)]
    path = write(tmp_path / "d.jsonl", rows)
    a, b = validate(path, model="gpt-4o-mini"), validate(path, model="gpt-3.5-turbo")
    assert b.stats.encoding == "cl100k_base"
    assert b.stats.example_tokens == [tokens.count_messages(r["messages"], "gpt-3.5-turbo") for r in rows]
    assert a.stats.example_tokens != b.stats.example_tokens


# -- reading -------------------------------------------------------------------------------------------

def test_bom_and_crlf_are_accepted(tmp_path):
    report = validate(write(tmp_path / "d.jsonl", base(100), newline="\r\n", bom=True))
    assert report.findings == []
    assert report.stats.n_examples == 100


def test_invalid_utf8_names_the_line(tmp_path):
    report = with_line(tmp_path, b'{"messages": [{"role": "user", "content": "caf\xe9"}]}', at=3)
    f = only(report, "invalid_utf8")
    assert f.line == 3 and f.severity == "error" and "UTF-8" in f.message


def test_utf16_file_is_one_clear_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes("\n".join(json.dumps(r) for r in base(3)).encode("utf-16"))
    report = validate(path)
    assert report.codes() == ["not_utf8"]
    assert "iconv" in report.findings[0].hint


def test_blank_lines_are_a_warning_naming_them(tmp_path):
    rows = base(100)
    rows.insert(3, "")
    rows.insert(10, "   ")
    report = validate(write(tmp_path / "d.jsonl", rows))
    f = only(report, "blank_line")
    assert f.severity == "warning" and f.lines == [4, 11]
    assert report.ok and report.stats.n_examples == 100


@pytest.mark.parametrize("raw,words", [
    ('{"messages": [{"role": "user", "content": "hi"},]}', "trailing comma"),
    ("{'messages': []}", "single quotes"),
    ('{"messages": [{"role": "user" "content": "hi"}]}', "comma"),
    ('{"messages": [{"role": "user", "content": "hi}]}', "never closed"),
    ('{"messages": []} {"messages": []}', "more text after"),
    ('{"messages": [{"role": "user", "content": "a\tb"}]}', "control character"),
    ('{"messages": NaN', "ends before the JSON does"),
])
def test_invalid_json_gives_line_column_and_plain_reason(tmp_path, raw, words):
    report = with_line(tmp_path, raw, at=7)
    f = only(report, "invalid_json")
    assert f.line == 7 and "column" in f.message and words in f.message


def test_pretty_printed_array_is_one_error(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(base(20), indent=2))
    report = validate(path)
    assert report.codes() == ["not_jsonl"]
    assert "array" in report.findings[0].message and "jq -c '.[]'" in report.findings[0].hint
    assert report.stats.n_examples == 0


def test_pretty_printed_object_is_one_error(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(example(1), indent=2))
    report = validate(path)
    assert report.codes() == ["not_jsonl"]
    assert "object" in report.findings[0].message


def test_first_example_cut_short_is_invalid_json_not_pretty_printed(tmp_path):
    rows = base(100)
    rows[0] = json.dumps(rows[0])[:-2]  # the closing "]}" is missing
    report = validate(write(tmp_path / "d.jsonl", rows))
    f = only(report, "invalid_json")
    assert f.line == 1 and "ends before the JSON does" in f.message
    assert report.stats.n_examples == 99


def test_one_line_array_is_not_jsonl(tmp_path):
    path = write(tmp_path / "d.json", [json.dumps(base(12))])
    assert validate(path).codes() == ["not_jsonl"]


def test_line_that_is_not_an_object(tmp_path):
    report = with_line(tmp_path, "[1, 2]", at=4)
    assert codes_at(report, 4) == ["not_object"]
    assert "a list" in only(report, "not_object").message


def test_empty_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n")
    report = validate(path)
    assert "empty_file" in report.codes() and not report.ok


# -- the guide's example -------------------------------------------------------------------------------

def test_guide_fixture_is_the_guide_text(guide_path, fixtures):
    guide = guide_path.read_text(encoding="utf-8").splitlines()
    fixture = (fixtures / "guide_example.jsonl").read_text(encoding="utf-8").splitlines()
    start = guide.index("Fine-tuning uses JSONL where each line is a complete conversation:") + 1
    assert fixture == guide[start:start + 2]


def test_guide_example_is_recognised_by_name(fixtures):
    report = validate(fixtures / "guide_example.jsonl")
    nested = [f for f in report.findings if f.code == "unescaped_nested_json"]
    assert [f.line for f in nested] == [1, 2]
    assert all("--fix" in f.hint for f in nested)
    assert "invalid_json" not in report.codes()
    # the examples are still read (as repaired) so their other problems and tokens show
    assert report.stats.n_examples == 2 and report.stats.example_tokens[0] > 40


def test_repair_escapes_nested_json_and_keeps_input(fixtures, tmp_path):
    src = fixtures / "guide_example.jsonl"
    before = src.read_bytes()
    out = tmp_path / "fixed.jsonl"
    assert repair(src, out) == [1, 2]
    assert src.read_bytes() == before
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    answer = json.loads(rows[0]["messages"][2]["content"])
    assert answer == {"items": [{"name": "Coffee", "price": 4.50}, {"name": "Bagel", "price": 3.00}]}
    assert rows[1]["messages"][2]["content"] == '{"items": [{"name": "Green Tea", "price": 2.75}]}'
    report = validate(out)
    assert [f for f in report.findings if f.line is not None] == []


def test_repaired_guide_style_dataset_validates_clean(fixtures, tmp_path):
    """Many guide-style lines (nested JSON unescaped) -> repair -> a file with no findings at all."""
    template = (fixtures / "guide_example.jsonl").read_text(encoding="utf-8").splitlines()[1]
    rows = [template.replace("Green Tea", f"Green Tea {i}").replace("2.75", f"{i}.75") for i in range(120)]
    rows[7] = escape_nested_json(rows[7])  # an already valid line is copied unchanged
    src = write(tmp_path / "guide.jsonl", rows, newline="\r\n")
    assert validate(src).codes().count("unescaped_nested_json") == 119
    out = tmp_path / "fixed.jsonl"
    changed = repair(src, out)
    assert len(changed) == 119 and 8 not in changed
    assert out.read_bytes().splitlines()[7] == src.read_bytes().splitlines()[7]
    assert validate(out).findings == []


def test_escape_nested_json_leaves_escaped_and_plain_strings():
    good = json.dumps({"messages": [{"role": "assistant", "content": '{"a": 1}'}]})
    assert escape_nested_json(good) is None
    assert escape_nested_json('{"content": "{not json"}') is None
    broken = '{"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{"x": 1}"}}]}]}'
    fixed = json.loads(escape_nested_json(broken))
    assert fixed["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'


def test_repair_refuses_to_overwrite_input(fixtures, tmp_path):
    from tunewise.errors import UsageError

    copy = tmp_path / "g.jsonl"
    copy.write_bytes((fixtures / "guide_example.jsonl").read_bytes())
    with pytest.raises(UsageError):
        repair(copy, copy)


# -- the example's shape -------------------------------------------------------------------------------

def test_messages_key_rules(tmp_path):
    rows = base(100) + [{"mesages": []}, {"messages": "hi"}, {"messages": []}]
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert set(codes_at(report, 101)) == {"unknown_key", "missing_messages"}
    assert "did you mean 'messages'?" in [f for f in report.findings if f.code == "unknown_key"][0].hint
    assert codes_at(report, 102) == ["messages_not_list"]
    assert codes_at(report, 103) == ["empty_messages"]


def test_message_roles(tmp_path):
    rows = base(100) + [
        {"messages": ["hello", {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "q"},
                      {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "asistant", "content": "a"}]},
    ]
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert codes_at(report, 101) == ["message_not_object"]
    assert codes_at(report, 102) == ["missing_role"]
    f = [f for f in report.findings if f.line == 103 and f.code == "unknown_role"][0]
    assert "did you mean 'system'?" in f.hint
    f = [f for f in report.findings if f.line == 104 and f.code == "unknown_role"][0]
    assert "did you mean 'assistant'?" in f.hint
    assert "no_assistant_message" in codes_at(report, 104)


def test_unknown_message_keys_with_did_you_mean(tmp_path):
    rows = base(100) + [
        {"messages": [{"role": "user", "contnet": "q", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "tool_call_id": "x"}]},
    ]
    report = validate(write(tmp_path / "d.jsonl", rows))
    hints = {f.line: f.hint for f in report.findings if f.code == "unknown_key"}
    assert hints[101] == "did you mean 'content'?"
    assert "assistant" in hints[102]
    assert "tool" in hints[103]


def test_content_rules(tmp_path):
    rows = base(100) + [
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                                   {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]}]},
        {"messages": [{"role": "user", "content": [{"type": "text"}]},
                      {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]},
        {"messages": [{"role": "user", "content": "q", "name": ""}, {"role": "assistant", "content": "a"}]},
    ]
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert codes_at(report, 101) == ["missing_content"]
    assert codes_at(report, 102) == ["invalid_content"]
    assert codes_at(report, 103) == []  # content parts, images on user messages: fine
    assert codes_at(report, 104) == ["invalid_content", "invalid_content"]
    assert codes_at(report, 105) == ["empty_content"]
    assert codes_at(report, 106) == ["missing_content"]
    assert codes_at(report, 107) == ["invalid_name"]


def test_weight_rules(tmp_path):
    def conv(*weights):
        msgs = [{"role": "user", "content": "q"}]
        for w in weights:
            msgs.append({"role": "assistant", "content": "a", "weight": w})
            msgs.append({"role": "user", "content": "more"})
        msgs.append({"role": "assistant", "content": "final", "weight": weights[-1]})
        return {"messages": msgs}

    rows = base(100) + [conv(0, 1), conv(2), conv(True), conv("1"), conv(0, 0)]
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert codes_at(report, 101) == []
    for line in (102, 103, 104):  # an invalid weight is one finding per message, not also "nothing trained"
        assert codes_at(report, line) == ["invalid_weight", "invalid_weight"]
    assert codes_at(report, 105) == ["no_trainable_assistant"]


def _call(cid="call_1", name="get_price", arguments='{"item": "tea"}'):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


TOOLS = [{"type": "function", "function": {"name": "get_price", "description": "Price of an item",
                                           "parameters": {"type": "object",
                                                          "properties": {"item": {"type": "string"}}}}}]


def tool_example(calls=None, tool_id="call_1", tools=TOOLS, **top):
    calls = calls if calls is not None else [_call()]
    return {"tools": tools, **top, "messages": [
        {"role": "user", "content": "How much is tea?"},
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "tool_call_id": tool_id, "content": "2.75"},
        {"role": "assistant", "content": "Tea costs $2.75."}]}


def test_tool_calls_rules(tmp_path):
    rows = base(100) + [
        tool_example(),
        tool_example(calls=[_call(arguments={"item": "tea"})]),
        tool_example(calls=[_call(arguments="{item: tea}")]),
        tool_example(calls=[{"type": "function", "function": {"name": "get_price", "arguments": "{}"}}]),
        tool_example(calls=[{"id": "call_1", "type": "code", "function": {"name": "get_price", "arguments": "{}"}}]),
        tool_example(tool_id="call_2"),
        tool_example(calls=[_call(name="get_cost")]),
        tool_example(calls="get_price"),
    ]
    bad_tool_msg = tool_example()
    del bad_tool_msg["messages"][2]["tool_call_id"]
    rows.append(bad_tool_msg)
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert codes_at(report, 101) == []
    assert codes_at(report, 102) == ["tool_arguments_not_string"]
    assert codes_at(report, 103) == ["tool_arguments_invalid_json"]
    assert "invalid_tool_calls" in codes_at(report, 104)
    assert "invalid_tool_calls" in codes_at(report, 105)
    assert codes_at(report, 106) == ["unknown_tool_call_id"]
    assert "call_1" in [f for f in report.findings if f.line == 106][0].hint
    assert codes_at(report, 107) == ["unknown_tool_name"]
    assert "get_price" in [f for f in report.findings if f.line == 107][0].hint
    assert "invalid_tool_calls" in codes_at(report, 108)
    assert codes_at(report, 109) == ["missing_tool_call_id"]


def test_tool_message_must_answer_an_earlier_call(tmp_path):
    row = {"messages": [{"role": "user", "content": "q"},
                        {"role": "tool", "tool_call_id": "call_1", "content": "2.75"},
                        {"role": "assistant", "tool_calls": [_call()]},
                        {"role": "assistant", "content": "done"}]}
    report = with_line(tmp_path, row, at=9)
    assert codes_at(report, 9) == ["unknown_tool_call_id"]


def test_top_level_tools_and_parallel_tool_calls(tmp_path):
    rows = base(100) + [
        tool_example(tools={"get_price": {}}),
        tool_example(tools=[{"type": "function", "function": {"description": "no name"}}]),
        tool_example(parallel_tool_calls="yes"),
        tool_example(calls=[_call("call_1"), _call("call_2")], parallel_tool_calls=False),
        tool_example(calls=[_call("call_1"), _call("call_2")], parallel_tool_calls=True),
    ]
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert "invalid_tools" in codes_at(report, 101)
    assert "invalid_tools" in codes_at(report, 102)
    assert codes_at(report, 103) == ["invalid_parallel_tool_calls"]
    assert codes_at(report, 104) == ["invalid_parallel_tool_calls"]
    assert codes_at(report, 105) == []


def test_deprecated_function_calling_is_a_warning(tmp_path):
    row = {"functions": [{"name": "get_price", "parameters": {"type": "object"}}], "messages": [
        {"role": "user", "content": "How much is tea?"},
        {"role": "assistant", "function_call": {"name": "get_price", "arguments": '{"item": "tea"}'}},
        {"role": "function", "name": "get_price", "content": "2.75"},
        {"role": "assistant", "content": "Tea costs $2.75."}]}
    report = with_line(tmp_path, row, at=2)
    assert sorted(codes_at(report, 2)) == ["deprecated_function_call", "deprecated_function_role",
                                          "deprecated_functions"]
    assert report.ok


def test_tool_tokens_are_counted(tmp_path):
    row = tool_example()
    report = with_line(tmp_path, row, at=1)
    assert report.stats.example_tokens[0] == tokens.count_messages(row["messages"], tools=row["tools"])
    assert report.stats.example_tokens[0] > tokens.count_messages(row["messages"])


def test_no_assistant_message(tmp_path):
    report = with_line(tmp_path, {"messages": [SYSTEM, {"role": "user", "content": "q"}]}, at=3)
    assert codes_at(report, 3) == ["no_assistant_message"]


# -- the data set as a whole ---------------------------------------------------------------------------

@pytest.mark.parametrize("n,codes", [
    (5, {"too_few_examples", "small_dataset"}),
    (30, {"small_dataset"}),
    (70, {"small_dataset"}),
    (100, set()),
])
def test_size_rules(tmp_path, n, codes):
    report = validate(write(tmp_path / "d.jsonl", base(n)))
    assert set(report.codes()) == codes
    if n == 30:
        assert "little improvement" in report.findings[0].message
    if n == 70:
        assert "100-500" in report.findings[0].message


def test_duplicates_name_their_lines(tmp_path):
    rows = base(100)
    rows[40] = rows[3]
    rows[70] = rows[3]
    rows[80] = rows[9]
    report = validate(write(tmp_path / "d.jsonl", rows))
    dups = [f for f in report.findings if f.code == "duplicate_example"]
    assert [f.lines for f in dups] == [[4, 41, 71], [10, 81]]
    assert all(f.severity == "warning" for f in dups)


def test_missing_system_and_user_messages(tmp_path):
    rows = base(100)
    rows[10] = example(10, system=None)
    rows[20] = {"messages": [SYSTEM, {"role": "assistant", "content": "{}"}]}
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert only(report, "missing_system_message").lines == [11]
    assert only(report, "missing_user_message").lines == [21]


def test_inconsistent_system_prompts(tmp_path):
    rows = base(100)
    other = {"role": "system", "content": "You extract items. Reply in JSON."}
    rows[5] = example(5, system=other)
    rows[60] = example(60, system=other)
    report = validate(write(tmp_path / "d.jsonl", rows))
    f = only(report, "inconsistent_system_prompt")
    assert f.lines == [6, 61] and "98 examples" in f.message


def test_varied_system_prompts_are_not_flagged(tmp_path):
    rows = [example(i, system={"role": "system", "content": f"Persona {i}"}) for i in range(100)]
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert "inconsistent_system_prompt" not in report.codes()


def test_answer_format_outliers(tmp_path):
    rows = base(100)
    rows[12] = example(12, answer="Sure! The item is Item12 at $12.50.")
    rows[33] = example(33, answer='{"items": [{"name": "Item33", "price": 33.5}')  # truncated JSON
    report = validate(write(tmp_path / "d.jsonl", rows))
    f = only(report, "answer_format_outlier")
    assert f.lines == [13, 34] and "98 of 100" in f.message


def test_over_the_limit_is_truncated_or_too_long(tmp_path):
    rows = base(100)
    rows[2] = example(2, answer="word " * 17000)  # the answer starts early: cut, but still teaches
    rows[6] = {"messages": [{"role": "user", "content": "word " * 17000},
                            {"role": "assistant", "content": "{}"}]}  # the answer starts past the limit
    path = write(tmp_path / "d.jsonl", rows)
    small = validate(path, model="gpt-3.5-turbo")
    truncated = only(small, "truncated")
    assert truncated.lines == [3] and truncated.severity == "warning" and "16,385" in truncated.message
    too_long = only(small, "too_long")
    assert too_long.line == 7 and too_long.severity == "error" and "starts at token 17,00" in too_long.message
    assert small.stats.billed_tokens_per_epoch == sum(min(t, 16385) for t in small.stats.example_tokens)
    assert small.stats.billed_tokens_per_epoch < sum(small.stats.example_tokens)
    big = validate(path, model="gpt-4o-mini")
    assert not {"too_long", "truncated"} & set(big.codes())


def test_prices_file_overrides_context_limit(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."gpt-4o-mini-2024-07-18"]\ncontext_limit = 20\n')
    report = validate(write(tmp_path / "d.jsonl", base(100)), prices=prices)
    assert report.stats.context_limit == 20
    assert len([f for f in report.findings if f.code == "too_long"]) == 100


def test_local_model_counts_with_its_template_and_warns_truncation(tmp_path):
    from tunewise import models

    rows = base(100)
    rows[4] = example(4, answer="word " * 2500)
    report = validate(write(tmp_path / "d.jsonl", rows), model=models.TINY_MODEL)
    assert report.stats.encoding == "hf:tunewise-tiny"
    tok = models.load_tokenizer(models.TINY_MODEL)
    rendered = tok.apply_chat_template(rows[0]["messages"], tokenize=False)
    assert report.stats.example_tokens[0] == len(tok.encode(rendered, add_special_tokens=False))
    f = only(report, "truncated")
    assert f.severity == "warning" and f.lines == [5] and report.ok
    assert report.stats.billed_tokens_per_epoch == sum(min(t, 2048) for t in report.stats.example_tokens)


def test_local_model_directory_counts_with_its_tokenizer(tmp_path):
    from tunewise import models

    directory = models.local_dir(models.TINY_MODEL)
    path = write(tmp_path / "d.jsonl", base(100))
    by_dir = validate(path, model=str(directory))
    assert by_dir.stats.encoding == f"hf:{directory}" and by_dir.stats.context_limit == 2048
    assert by_dir.stats.example_tokens == validate(path, model=models.TINY_MODEL).stats.example_tokens


def test_every_finding_reported_with_known_code(tmp_path):
    rows = base(100) + ["{bad", {"messages": []}, {"messages": [{"role": "x"}]}]
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert [f.line for f in report.errors] == [101, 102, 103, 103]
    for f in report.findings:
        assert f.code in CODES and CODES[f.code][0] == f.severity
        assert f.message and f.hint


def test_parallel_workers_give_the_same_report(tmp_path):
    rows = base(300)
    rows[10] = rows[250] = rows[3]  # duplicates across chunks
    rows[120] = example(120, answer="plain text")
    rows[200] = example(200, system={"role": "system", "content": "Other prompt"})
    rows.insert(150, "")
    rows.insert(160, "{bad json")
    rows.insert(290, {"messages": []})
    path = write(tmp_path / "d.jsonl", rows, bom=True)
    one = validate(path, workers=1)
    assert len(one.findings) >= 6
    assert validate(path, workers=3).to_dict() == one.to_dict()


def test_parallel_workers_stop_on_a_non_jsonl_file(tmp_path, monkeypatch):
    import importlib

    validate_module = importlib.import_module("tunewise.data.validate")  # the module, not the function
    path = tmp_path / "d.json"
    path.write_text(json.dumps(base(200), indent=2))
    assert validate(path, workers=2).codes() == ["not_jsonl"]
    # where forking is unsafe (other threads running) the workers are fresh interpreters: same result
    monkeypatch.setattr(validate_module, "_start_method", lambda: "spawn")
    assert validate(path, workers=2).codes() == ["not_jsonl"]


# -- the Python API ------------------------------------------------------------------------------------

def test_raise_for_errors_names_the_first_lines(tmp_path):
    report = with_line(tmp_path, {"messages": []}, at=8)
    with pytest.raises(DataError) as exc:
        report.raise_for_errors()
    assert "line 8" in exc.value.message and exc.value.code == "empty_messages"
    clean = validate(write(tmp_path / "c.jsonl", base(100)))
    assert clean.raise_for_errors() is clean


def test_iter_examples_streams_and_stops_at_bad_lines(tmp_path):
    rows = base(3)
    rows.insert(1, "")
    got = list(iter_examples(write(tmp_path / "d.jsonl", rows, newline="\r\n", bom=True)))
    assert [n for n, _ in got] == [1, 3, 4] and got[0][1] == rows[0]
    with pytest.raises(DataError) as exc:
        list(iter_examples(write(tmp_path / "e.jsonl", base(2) + ["{oops"])))
    assert ":3:" in exc.value.message and exc.value.code == "invalid_json"


def test_missing_file_and_unknown_model(tmp_path):
    from tunewise.errors import NotFound

    with pytest.raises(NotFound):
        validate(tmp_path / "nope.jsonl")
    with pytest.raises(NotFound):
        validate(write(tmp_path / "d.jsonl", base(10)), model="gpt-9")


def test_lone_surrogate_escape_is_read_and_counted(tmp_path):
    """json (and OpenAI) accept "\\ud800"; jiter refuses it, so the reader falls back, and counting replaces
    it as tiktoken does."""
    row = {"messages": [{"role": "user", "content": "odd \ud800 text"}, {"role": "assistant", "content": "ok"}]}
    report = with_line(tmp_path, json.dumps(row), at=1)  # ASCII-escaped, as "\ud800"
    assert codes_at(report, 1) == []
    assert report.stats.example_tokens[0] == tokens.count_messages(row["messages"])
    assert [n for n, _ in iter_examples(tmp_path / "d.jsonl")][:2] == [1, 2]


def test_arbitrary_json_shapes_never_crash(tmp_path):
    """Random values in every slot: each becomes findings with known codes, never an exception."""
    import random

    rng = random.Random(7)
    values = [None, True, 0, 1, 2, -1, 1.5, "", " ", "x", "user", "assistant", "tool", "system", "function",
              [], ["user"], [{}], {}, {"a": 1}, [{"type": "text"}], [{"type": ["text"]}], {"name": ["f"]}]

    def anything(depth=0):
        if depth < 2 and rng.random() < 0.3:
            keys = ["role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call", "type",
                    "id", "function", "arguments", "text", "image_url", "url"]
            return {rng.choice(keys): anything(depth + 1) for _ in range(rng.randint(0, 4))}
        if depth < 2 and rng.random() < 0.2:
            return [anything(depth + 1) for _ in range(rng.randint(0, 3))]
        return rng.choice(values)

    rows = []
    for _ in range(300):
        msgs = [{k: anything() for k in rng.sample(["role", "content", "name", "weight", "tool_calls",
                                                     "tool_call_id", "function_call", "refusal"],
                                                    rng.randint(0, 4))} for _ in range(rng.randint(0, 4))]
        for m in msgs:
            if rng.random() < 0.7:
                m["role"] = rng.choice(["system", "user", "assistant", "tool", "function", anything()])
        example = {"messages": msgs}
        for key in ("tools", "parallel_tool_calls", "functions"):
            if rng.random() < 0.2:
                example[key] = anything()
        rows.append(example)
    report = validate(write(tmp_path / "d.jsonl", rows))
    assert report.stats.n_examples == 300 and len(report.errors) > 100
    assert {f.code for f in report.findings} <= set(CODES)


@pytest.mark.parametrize("values", [[7], [3, 1], [5, 1, 4, 2, 3], list(range(101)), [0, 0, 10, 1000, 3, 3, 9]])
def test_summary_percentiles_match_numpy(values):
    import numpy as np

    from tunewise.data import Summary

    s = Summary.of(values)
    arr = np.asarray(values, dtype=float)
    assert (s.min, s.max) == (min(values), max(values))
    assert s.mean == pytest.approx(arr.mean())
    for got, q in ((s.p10, 10), (s.median, 50), (s.p90, 90)):
        assert got == pytest.approx(np.percentile(arr, q))


# -- the fast paths give the findings and figures of the full rules -----------------------------------------
PLAIN_EDGES = [
    example(1), example(1), example(2, system=None), example(3, answer="plain text"), example(4, answer=" [1, 2] "),
    {"messages": [{"content": "hi", "role": "user"}, {"content": "{}", "role": "assistant"}]},  # keys swapped
    {"messages": [SYSTEM, {"role": "assistant", "content": "no user"}]},
    {"messages": [SYSTEM, {"role": "user", "content": "no answer"}]},
    {"messages": [SYSTEM, {"role": "user", "content": "   "}, {"role": "assistant", "content": "x"}]},
    {"messages": [SYSTEM, {"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]},
    {"messages": [{"role": "system", "content": "Another prompt."}, {"role": "user", "content": "a"},
                  {"role": "assistant", "content": "[" * 201 + "]" * 201}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "[" + "9" * 4300 + "]"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "[NaN]"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x", "weight": 0}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "x"}]},
    {"messages": [{"role": ["user"], "content": "a"}, {"role": "assistant", "content": "x"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}], "tools": []},
    {"messages": []},
    {"messages": [{"role": "user", "content": "a" * 3000}, {"role": "assistant", "content": "b"}]},
    {"messages": [{"role": "user", "content": "word " * 17000}, {"role": "assistant", "content": "{}"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "word " * 17000}]},
    '{"messages": [{"role": "user", "content": "\\ud800 lone"}, {"role": "assistant", "content": "\\udfff"}]}',
    '{"messages": [{"role": "user", "content": "a", "role": "system"}, {"role": "assistant", "content": "b"}]}',
    '{"messages": [], "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
    '{"messages": ' + "[" * 199 + "]" * 199 + "}",
    '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]} ',
]


def test_plain_chat_pass_matches_every_rule(tmp_path, monkeypatch):
    """The fused pass for plain chat examples reports exactly what the full rules report, on edge cases."""
    import importlib

    module = importlib.import_module("tunewise.data.validate")  # the package's `validate` is the function
    path = write(tmp_path / "d.jsonl", PLAIN_EDGES * 3)
    small = validate(path, model="gpt-3.5-turbo")  # a 16,385-token limit: two lines are over it
    fast = [validate(path).to_dict(), small.to_dict()]
    monkeypatch.setattr(module._Validator, "plain_chat", lambda self, number, raw, example: False)
    assert [validate(path).to_dict(), validate(path, model="gpt-3.5-turbo").to_dict()] == fast
    assert {f.code for f in small.findings} >= {"duplicate_example", "empty_content", "no_assistant_message",
                                                 "missing_system_message", "missing_user_message", "truncated",
                                                 "too_long", "unknown_role", "inconsistent_system_prompt"}


def test_raw_lines_across_block_boundaries(tmp_path, monkeypatch):
    """Lines read a block at a time are the lines a line-by-line read gives: CRLF and lone CR ends, a BOM, lines
    longer than a block, a byte limit that ends inside a line."""
    from tunewise.data import reading

    data = (b"\xef\xbb\xbf" + b"first\r\n" + b"x" * 50 + b"\n\n\r\n" + b"mid\rdle\r\r\n" + b"y" * 37 + b"\n"
            + b"last\r")
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)

    def reference(start, limit):
        lines, consumed = [], 0
        with open(path, "rb") as fh:
            fh.seek(start)
            for raw in fh:
                if limit is not None and consumed >= limit:
                    break
                consumed += len(raw)
                raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith((b"\n", b"\r")) else raw
                lines.append(raw)
        if start == 0 and lines and lines[0].startswith(reading.BOM):
            lines[0] = lines[0][3:]
        return lines

    for block in (1, 2, 3, 7, 16, 1 << 20):
        monkeypatch.setattr(reading, "BLOCK", block)
        for start, limit in ((0, None), (0, 5), (0, 30), (12, None), (12, 40), (0, len(data))):
            with open(path, "rb") as fh:
                fh.seek(start)
                got = list(reading.raw_lines(fh, 1 if start == 0 else 2, limit))
            want = reference(start, limit)
            assert [raw for _, raw in got] == want, (block, start, limit)
            assert [n for n, _ in got] == list(range(got[0][0], got[0][0] + len(want))) if got else not want


@pytest.mark.parametrize("text", ['{"a": 1}', "[1e400]", "[NaN]", '["\\ud800"]', "[" * 201 + "]" * 201,
                                  "[" * 200 + "]" * 200, '{"a":' * 201 + "1" + "}" * 201, "[" + "9" * 4300 + "]",
                                  "[" + "9" * 4301 + "]", "[-" + "9" * 4300 + "]", '{"a": 1,}', '["\x01"]', "[01]",
                                  '{"a": "' + "b" * 5000 + '"}', "[1] x", '{"a": 1, "a": [2]}', "[1.5e-400, -0]"])
def test_msgspec_reads_as_jiter_and_the_stdlib_do(text):
    """msgspec's parse and check give what jiter and the stdlib give (or leave the text to them)."""
    from tunewise.data.reading import fallback_loads, fast_loads, is_json

    try:
        want = repr(fallback_loads(text))
    except ValueError as exc:
        want = type(exc).__name__
    try:
        got = repr(fast_loads(text))
    except ValueError as exc:
        got = type(exc).__name__
    assert got == want
    assert is_json(text) == (not want.endswith("Error"))
