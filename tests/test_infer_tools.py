"""Reading tool calls back out of generated text, whole and streamed, and the grammars each tool_choice asks for."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunewise.errors import UsageError
from tunewise.infer.tools import ToolCallStream, check_tools, parse_tool_calls, structural_tag

CALL_A = '<tool_call>\n{"name": "get_order_status", "arguments": {"order_id": "HF-12345"}}\n</tool_call>'
CALL_B = '<tool_call>\n{"name": "cancel_order", "arguments": {"order_id": "HF-2"}}\n</tool_call>'
TOOLS = [{"type": "function", "function": {"name": "get_order_status", "strict": True, "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "cancel_order", "parameters": {"type": "object"}}}]


def calls_of(text):
    content, calls = parse_tool_calls(text)
    return content, [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


def test_calls_and_content_are_read_as_openai_returns_them():
    assert calls_of(CALL_A) == (None, [("get_order_status", {"order_id": "HF-12345"})])
    assert calls_of(CALL_A + "\n" + CALL_B)[1] == [("get_order_status", {"order_id": "HF-12345"}),
                                                  ("cancel_order", {"order_id": "HF-2"})]
    assert calls_of("Let me check.\n" + CALL_A) == ("Let me check.", [("get_order_status", {"order_id": "HF-12345"})])
    # Arguments written as a JSON string, as some models do, are read too.
    assert calls_of('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>')[1] == [("f", {"a": 1})]
    # Without calls the content is the text as generated; a block that is not a call stays as written.
    assert parse_tool_calls(" plain answer\n") == (" plain answer\n", [])
    assert parse_tool_calls("<tool_call>not json</tool_call>") == ("<tool_call>not json</tool_call>", [])
    # A call cut short (max_tokens) after a complete one is dropped; alone, it stays as text.
    assert calls_of(CALL_A + '\n<tool_call>\n{"name": "canc') == (None, [("get_order_status", {"order_id": "HF-12345"})])
    assert parse_tool_calls('<tool_call>\n{"name": "canc')[1] == []
    content, calls = parse_tool_calls(CALL_A + CALL_B)
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert len({c["id"] for c in calls}) == 2


def stream(text: str, cuts: list[int]) -> tuple[str | None, list]:
    reader, events, last = ToolCallStream(), [], 0
    for cut in sorted(set(cuts)) + [len(text)]:
        events += reader.feed(text[last:cut])
        last = cut
    events += reader.finish()
    content = "".join(e[1] for e in events if e[0] == "content")
    calls = [(e[3], json.loads(e[4])) for e in events if e[0] == "tool_call"]
    assert [e[1] for e in events if e[0] == "tool_call"] == list(range(len(calls)))  # indexes 0, 1, ...
    return content, calls


PIECES = ["Sure.", " ", "\n", CALL_A, CALL_B, "<tool", "_call>", "</tool_call>", "<", "done", "<tool_call>{}</tool_call>"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=6), st.lists(st.integers(0, 400), max_size=8))
def test_streamed_calls_are_those_of_the_whole_text_wherever_it_is_cut(parts, cuts):
    text = "".join(parts)
    content, calls = calls_of(text)
    s_content, s_calls = stream(text, [c for c in cuts if c <= len(text)])
    assert s_calls == calls
    if not calls:
        assert s_content == text  # no calls: every character streams as content
    else:
        assert s_content.strip() == (content or "")


def test_each_tool_choice_asks_for_its_grammar():
    assert structural_tag(None) is None and structural_tag(TOOLS[1:]) is None  # auto, nothing strict: free
    auto = structural_tag(TOOLS)["format"]  # a strict function: calls constrained once begun
    assert auto["type"] == "triggered_tags" and auto["triggers"] == ["<tool_call>"]
    assert auto["tags"][0]["content"]["json_schema"] == TOOLS[0]["function"]["parameters"]
    assert auto["tags"][1]["content"]["json_schema"] is True  # not strict: any JSON object... of any shape
    assert structural_tag(TOOLS, "none")["format"] == {"type": "any_text", "excludes": ["<tool_call>"]}
    required = structural_tag(TOOLS, "required", False)["format"]
    assert required["type"] == "tags_with_separator" and required["at_least_one"] and required["stop_after_first"]
    assert required["tags"][1]["content"]["json_schema"] == {"type": "object"}
    named = structural_tag(TOOLS, {"type": "function", "function": {"name": "cancel_order"}})["format"]
    assert named["type"] == "tag" and named["begin"] == '<tool_call>\n{"name": "cancel_order", "arguments": '


@pytest.mark.parametrize("tools, choice, parallel, param", [
    ([{"type": "function", "function": {"name": "x" * 65}}], None, None, "tools[0].function.name"),
    ([{"type": "function", "function": {"name": "f", "extra": 1}}], None, None, "tools[0].function"),
    ([{"type": "function", "function": {"name": "f", "strict": "yes"}}], None, None, "tools[0].function.strict"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": 3}}}], None,
     None, "tools[0].function.parameters"),
    ([{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)], None, None, "tools"),
    ("not a list", None, None, "tools"),
    (TOOLS, {"type": "function"}, None, "tool_choice"),
])
def test_bad_definitions_name_the_field(tools, choice, parallel, param):
    with pytest.raises(UsageError) as err:
        check_tools(tools, choice, parallel)
    assert err.value.param == param
