"""Tool calls through the official SDK on the tiny model: ``tools``, ``tool_choice`` (auto, none, required, a named
function), ``parallel_tool_calls``, strict arguments, streamed calls in OpenAI's delta shape, and 400s naming the
field of a bad definition."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tunewise.serve.testing import running_server, validate_schema

MODEL = "gpt-4o-mini"  # the tests' server stands the tiny model in for it
ASK = [{"role": "user", "content": "Where is my order A1?"}]
ORDER = {"type": "object", "properties": {"order_id": {"type": "string", "enum": ["A1", "B2"]}},
         "required": ["order_id"], "additionalProperties": False}
REFUND = {"type": "object", "properties": {"amount": {"type": "integer", "minimum": 0, "maximum": 99},
                                           "reason": {"type": "string", "enum": ["damaged", "late"]}},
          "required": ["amount", "reason"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_order", "description": "Look up an order.",
                                           "parameters": ORDER, "strict": True}},
         {"type": "function", "function": {"name": "refund", "description": "Refund an order.",
                                           "parameters": REFUND, "strict": True}}]
SCHEMAS = {"get_order": ORDER, "refund": REFUND}


@pytest.fixture(scope="module")
def server():
    with running_server(worker=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def ask(client, **kw):
    kw.setdefault("max_tokens", 120)
    return client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, temperature=0, **kw)


def check_call(call, name=None):
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) == len("call_") + 24
    assert call.function.name in SCHEMAS if name is None else call.function.name == name
    args = json.loads(call.function.arguments)  # a JSON string, as OpenAI sends it
    jsonschema.validate(args, SCHEMAS[call.function.name])  # strict: the schema holds
    return args


def test_required_is_calls_matching_their_schemas(client):
    reply = ask(client, tool_choice="required", max_tokens=45)
    choice = reply.choices[0]
    # Parallel calls allowed: the tiny model may go on calling until max_tokens; every complete call counts.
    assert choice.finish_reason in ("tool_calls", "length"), choice
    assert choice.message.tool_calls and choice.message.content is None
    for call in choice.message.tool_calls:
        check_call(call)
    assert len({c.id for c in choice.message.tool_calls}) == len(choice.message.tool_calls)


def test_named_function_is_called_once(client):
    reply = ask(client, tool_choice={"type": "function", "function": {"name": "refund"}})
    calls = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    args = check_call(calls[0], "refund")
    assert set(args) == {"amount", "reason"}


def test_parallel_tool_calls_false_stops_after_one_call(client):
    reply = ask(client, tool_choice="required", parallel_tool_calls=False)
    assert reply.choices[0].finish_reason == "tool_calls"
    assert len(reply.choices[0].message.tool_calls) == 1
    check_call(reply.choices[0].message.tool_calls[0])


def test_none_never_calls_and_auto_answers_text_or_calls(client):
    none = ask(client, tool_choice="none", max_tokens=12)
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason in ("stop", "length")
    assert "<tool_call>" not in (none.choices[0].message.content or "")
    auto = ask(client, max_tokens=12)
    message = auto.choices[0].message
    if message.tool_calls:
        assert auto.choices[0].finish_reason == "tool_calls"
    else:
        assert isinstance(message.content, str)


def test_streamed_calls_are_the_non_streamed_ones_in_openais_delta_shape(client):
    kw = {"tool_choice": "required", "parallel_tool_calls": False}
    whole = ask(client, **kw).choices[0].message.tool_calls
    chunks = list(ask(client, stream=True, **kw))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    built: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:  # ChoiceDeltaToolCall
                slot = built.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                if delta.id:
                    assert delta.type == "function" and delta.id.startswith("call_")
                    slot["id"], slot["name"] = delta.id, delta.function.name
                slot["arguments"] += delta.function.arguments or ""
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["tool_calls"]
    assert [(s["name"], json.loads(s["arguments"])) for _, s in sorted(built.items())] == \
        [(c.function.name, json.loads(c.function.arguments)) for c in whole]
    assert all(s["id"] for s in built.values())


def test_answers_and_chunks_with_calls_match_openais_spec(server, shared_dir):
    import httpx

    spec = shared_dir / "reference" / "openai-openapi.yaml"
    body = {"model": MODEL, "messages": ASK, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False,
            "max_tokens": 120, "temperature": 0}
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"},
                      timeout=120) as http:
        answer = http.post("/chat/completions", json=body).json()
        assert answer["choices"][0]["message"]["tool_calls"]
        validate_schema(spec, "CreateChatCompletionResponse", answer)
        with http.stream("POST", "/chat/completions", json={**body, "stream": True}) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert any(c["choices"] and c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    for chunk in chunks:
        validate_schema(spec, "CreateChatCompletionStreamResponse", chunk)


def test_a_tool_conversation_continues_after_the_tool_result(client):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": "A1"}'}}
    messages = ASK + [{"role": "assistant", "content": None, "tool_calls": [call]},
                      {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="none",
                                           max_tokens=5, temperature=0)
    assert reply.usage.prompt_tokens > 100  # the tools, the call and its result are all in the prompt


BAD = [
    ({"tools": [{"type": "function", "function": {"name": "has space", "parameters": ORDER}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tools": [TOOLS[0], TOOLS[0]]}, "tools[1].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     "tools[0].function.parameters"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "cancel"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
]


@pytest.mark.parametrize("fields, param", BAD, ids=[p for _, p in BAD])
def test_bad_tool_definitions_are_400s_naming_the_field(client, fields, param):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, extra_body=fields)
    assert err.value.status_code == 400
    assert err.value.param == param, err.value.body
    assert err.value.type == "invalid_request_error" and err.value.message
