"""Rendering for training: exact token ids, assistant-only labels, weight 0, and agreement with inference."""

from __future__ import annotations

import copy
import json

import pytest

from tunewise import models
from tunewise.errors import DataError, Unsupported
from tunewise.train.render import IGNORE, Renderer


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer(models.TINY_MODEL)


@pytest.fixture(scope="module")
def renderer(tokenizer):
    return Renderer(tokenizer, model_name=models.TINY_MODEL)


def enc(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def spans(labels):
    """Contiguous labelled spans as (start, end) pairs."""
    out, start = [], None
    for i, x in enumerate(labels + [IGNORE]):
        if x != IGNORE and start is None:
            start = i
        elif x == IGNORE and start is not None:
            out.append((start, i))
            start = None
    return out


MULTI = {"messages": [
    {"role": "system", "content": "You extract prices. Return JSON only."},
    {"role": "user", "content": "Coffee - $4.50"},
    {"role": "assistant", "content": '{"items": [{"name": "Coffee", "price": 4.5}]}'},
    {"role": "user", "content": "And tea $2"},
    {"role": "assistant", "content": "wrong answer", "weight": 0},
    {"role": "user", "content": "Try again"},
    {"role": "assistant", "content": '{"items": [{"name": "Tea", "price": 2}]}', "weight": 1},
]}


def test_exact_ids_and_assistant_only_labels(tokenizer, renderer):
    r = renderer.render(7, MULTI)
    m = MULTI["messages"]
    im_start, im_end, nl = "<|im_start|>", "<|im_end|>", "\n"
    # The expected ids, spelled out from SmolLM2's format: <|im_start|>role\ncontent<|im_end|>\n per message,
    # ending right after the last trained <|im_end|>.
    text = "".join(f"{im_start}{x['role']}{nl}{x['content']}{im_end}{nl}" for x in m)[: -len(nl)]
    assert r.input_ids == enc(tokenizer, text)
    eos = tokenizer.convert_tokens_to_ids(im_end)
    assert eos == tokenizer.eos_token_id
    want = [enc(tokenizer, m[2]["content"]) + [eos], enc(tokenizer, m[6]["content"]) + [eos]]
    got = [r.labels[a:b] for a, b in spans(r.labels)]
    assert got == want  # both weight-1 turns, end-of-turn included; the weight-0 turn and everything else not
    head = enc(tokenizer, f"{im_start}assistant{nl}")
    for a, b in spans(r.labels):
        assert r.input_ids[a - len(head):a] == head  # each span starts right after the assistant header
        assert r.input_ids[a:b] == r.labels[a:b]
    assert r.n_labels == sum(len(w) for w in want)
    assert r.line == 7


def test_training_render_agrees_with_inference_prompts(renderer):
    """For every trained turn, the inference prompt is a prefix and the labels are what generation must produce."""
    r = renderer.render(1, MULTI)
    msgs = MULTI["messages"]
    for k in (2, 6):
        prompt = renderer.prompt_ids(msgs[:k])  # what a server feeds the model before it answers
        assert r.input_ids[: len(prompt)] == prompt
        answer = r.labels[len(prompt):]
        end = answer.index(renderer.eot_id) + 1
        assert renderer.tokenizer.decode(answer[:end - 1]) == msgs[k]["content"]
    # The weight-0 turn is context only: it appears in the ids but not in the labels.
    prompt4 = renderer.prompt_ids(msgs[:4])
    assert all(x == IGNORE for x in r.labels[len(prompt4): len(prompt4) + 3])


def test_default_system_prompt_is_rendered_as_inference_renders_it(tokenizer, renderer):
    ex = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    r = renderer.render(1, ex)
    prompt = tokenizer.apply_chat_template(ex["messages"][:1], add_generation_prompt=True, tokenize=True,
                                           return_dict=False)
    assert "SmolLM" in tokenizer.decode(prompt)  # the template injects its default system prompt
    assert r.input_ids == list(prompt) + enc(tokenizer, "hello") + [tokenizer.eos_token_id]


@pytest.mark.parametrize("content", [" leading space", "\nnewline first", "ünïcode ✓ 日本", "", '  {"x": 1}  \n'])
def test_awkward_content_still_agrees(tokenizer, renderer, content):
    ex = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}]}
    r = renderer.render(1, ex)
    labelled = [x for x in r.labels if x != IGNORE]
    assert tokenizer.decode(labelled) == content + tokenizer.eos_token
    assert r.input_ids[: -len(labelled)] == renderer.prompt_ids(ex["messages"][:1])


def test_content_as_parts_is_joined(renderer):
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                          {"role": "assistant", "content": "ok"}]}
    plain = {"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "ok"}]}
    assert renderer.render(1, parts).input_ids == renderer.render(1, plain).input_ids


def test_special_token_inside_content_is_a_render_mismatch(renderer):
    ex = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a<|im_end|>b"}]}
    with pytest.raises(DataError, match="Line 3: render mismatch"):
        renderer.render(3, ex)


def test_history_that_retokenizes_differently_fails_loudly(renderer):
    ex = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  padded"},
                       {"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]}
    with pytest.raises(DataError, match="render mismatch") as err:
        renderer.render(4, ex)
    assert "weight 0" in err.value.hint
    ex["messages"][1]["weight"] = 0  # the suggested fix works
    assert renderer.render(4, ex).n_labels == 2


def test_nothing_to_train_is_an_error(renderer):
    ex = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}
    with pytest.raises(DataError, match="Line 5: no assistant message"):
        renderer.render(5, ex)


TOOLS = [{"type": "function", "function": {"name": "get_order", "description": "Look up an order.",
                                           "parameters": {"type": "object",
                                                          "properties": {"order_id": {"type": "string"}},
                                                          "required": ["order_id"]}}}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": "A1"}'}}
TOOL_CHAT = {"tools": TOOLS, "messages": [
    {"role": "system", "content": "You are a shop assistant."},
    {"role": "user", "content": "Where is A1?"},
    {"role": "assistant", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
    {"role": "assistant", "content": "Order A1 has shipped."},
]}


def test_tool_conversations_render_with_the_shipped_chatml_template(tokenizer, renderer):
    from tunewise.infer.tools import chatml_tools_template, template_for

    assert "tools" not in (tokenizer.chat_template or "")  # the tiny model's own template has no tool format
    assert template_for(tokenizer, TOOL_CHAT["messages"], TOOLS) == chatml_tools_template()
    r = renderer.render(1, TOOL_CHAT)
    text = tokenizer.decode(r.input_ids, skip_special_tokens=False)
    tool_json = json.dumps(TOOLS[0])
    # Byte for byte Qwen2.5's format: the functions in <tools>, the call in <tool_call>, the result in a user turn.
    assert text == (
        "<|im_start|>system\nYou are a shop assistant.\n\n# Tools\n\nYou may call one or more functions to assist "
        "with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{tool_json}\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
        "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
        "<|im_start|>user\nWhere is A1?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_order\", \"arguments\": {\"order_id\": \"A1\"}}\n"
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n{\"status\": \"shipped\"}\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nOrder A1 has shipped.<|im_end|>")
    # Token identity with inference, turn by turn: each prompt is what the server feeds the model (the same
    # template, the same tools), and the labels are the call (then the answer) and the end-of-turn token.
    got = [tokenizer.decode(r.labels[a:b], skip_special_tokens=False) for a, b in spans(r.labels)]
    assert got == ['<tool_call>\n{"name": "get_order", "arguments": {"order_id": "A1"}}\n</tool_call><|im_end|>',
                   "Order A1 has shipped.<|im_end|>"]
    for k in (2, 4):
        prompt = renderer.prompt_ids(TOOL_CHAT["messages"][:k], TOOLS)
        assert r.input_ids[: len(prompt)] == prompt
        assert r.labels[len(prompt) - 1] == IGNORE and r.labels[len(prompt)] != IGNORE


def test_the_server_renders_tool_prompts_with_the_trainers_call(tokenizer, renderer):
    from tunewise.infer.runner import ModelRunner

    # ModelRunner.render is the inference side (no model needed to call it unbound with a stand-in).
    class Stand:
        name = "tiny"
        _tok_lock = __import__("threading").Lock()

    Stand.tokenizer = tokenizer
    for k in (2, 4):
        msgs = TOOL_CHAT["messages"][:k]
        assert ModelRunner.render(Stand(), msgs, TOOLS) == renderer.prompt_ids(msgs, TOOLS)


def test_models_with_their_own_tool_template_keep_it(tokenizer):
    from tunewise.infer.tools import apply_template, template_for

    own = copy.deepcopy(tokenizer)
    own.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if tools %}TOOLS:{{ tools | length }}{% endif %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    msgs = [{"role": "user", "content": "hi"}]
    assert template_for(own, msgs, TOOLS) is None
    assert own.decode(apply_template(own, msgs, TOOLS)).endswith("TOOLS:1<|im_start|>assistant\n")
    # Conversations without tools keep the model's own template on a ChatML model too.
    assert template_for(tokenizer, msgs) is None


def test_tool_examples_are_refused_without_template_support(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    ex = {"messages": [{"role": "user", "content": "weather?"},
                       {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                             "function": {"name": "w", "arguments": "{}"}}]}],
          "tools": [{"type": "function", "function": {"name": "w", "parameters": {}}}]}
    with pytest.raises(Unsupported, match="Line 9: a tool-calling example"):
        Renderer(plain, model_name="plain").render(9, ex)
