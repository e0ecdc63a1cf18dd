"""The legacy ``POST /v1/completions`` through the official SDK's ``client.completions.create`` on the tiny model:
OpenAI's ``text_completion`` shape, streamed and not, the prompt encoded as the trainer encodes a
prompt/completion example, and 400s naming the field for what the server lacks."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tunewise import models
from tunewise.serve.testing import running_server, validate_schema

MODEL = "davinci-002"  # a prompt/completion model; the tests' server stands the tiny model in for it
PROMPT = "Coffee - $4.50 ->"


@pytest.fixture(scope="module")
def server():
    with running_server(worker=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_a_completion_in_openais_shape(client, server, shared_dir):
    reply = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-") and reply.model == MODEL
    choice = reply.choices[0]
    assert choice.index == 0 and choice.finish_reason in ("stop", "length") and isinstance(choice.text, str)
    # The prompt's tokens as the trainer's prompt/completion render counts them (no chat template).
    tokenizer = models.load_tokenizer(models.TINY_MODEL)
    assert reply.usage.prompt_tokens == len(tokenizer(PROMPT, add_special_tokens=True)["input_ids"])
    assert 1 <= reply.usage.completion_tokens <= 4
    again = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    assert again.choices[0].text == choice.text  # greedy: the same text
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"},
                      timeout=120) as http:
        body = http.post("/completions", json={"model": MODEL, "prompt": PROMPT, "max_tokens": 3}).json()
        validate_schema(shared_dir / "reference" / "openai-openapi.yaml", "CreateCompletionResponse", body)


def test_several_prompts_and_choices_are_indexed_as_openai_does(client):
    reply = client.completions.create(model=MODEL, prompt=["Tea ->", "Bagel ->"], n=2, max_tokens=2, seed=1)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]


def test_streamed_completion_is_the_same_text(client):
    whole = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0).choices[0]
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [whole.finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


@pytest.mark.parametrize("fields, param", [
    ({"logprobs": 2}, "logprobs"),
    ({"echo": True}, "echo"),
    ({"suffix": " end"}, "suffix"),
    ({"best_of": 3}, "best_of"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"prompt": [[1, 2, 3]]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"max_output_tokens": 5}, "max_output_tokens"),
])
def test_what_the_server_lacks_is_a_400_naming_the_field(client, fields, param):
    kw = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2}
    extra = {k: v for k, v in fields.items() if k not in ("prompt", "max_tokens")}
    kw.update({k: v for k, v in fields.items() if k in ("prompt", "max_tokens")})
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(**kw, extra_body=extra)
    assert err.value.param == param, err.value.body
    assert err.value.type == "invalid_request_error"
    assert json.dumps(err.value.body)  # OpenAI's error shape: message, type, param, code
