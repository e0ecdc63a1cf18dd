"""Where the server meets OpenAI's contract through the official SDK: chat requests without ``max_tokens`` near the
context's end, ``top_p=0``, fields that ask for behaviour the server lacks (refused, naming the field) or for nothing
(accepted), and a paused job under the SDK's strict response validation."""

from __future__ import annotations

import httpx
import openai
import pytest

from tunewise.serve.routes.chat_fields import ACCEPTED, HONOURED, REFUSED
from tunewise.serve.testing import running_server, wait_for, wait_for_step, write_receipts

CONTEXT = 2048  # the tiny model's context length
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def server():
    with running_server(env={"TUNEWISE_WORKER_POLL_S": "0.05"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def test_no_max_tokens_runs_to_the_context_end(client):
    # max_chat_tokens (4096) is more than the whole context: leaving max_tokens out is still answered, and the
    # answer stops where the context ends.
    from tunewise import models

    tokenizer = models.load_tokenizer(models.TINY_MODEL)
    overhead = len(tokenizer.apply_chat_template([{"role": "user", "content": "word "}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False)) - 1
    long = "word " * (CONTEXT - 6 - overhead)  # 6 tokens of room: the test stays short
    reply = client.chat.completions.create(model="gpt-4o-mini", temperature=0,
                                           messages=[{"role": "user", "content": long}])
    usage = reply.usage
    assert usage.prompt_tokens == CONTEXT - 6, usage
    choice = reply.choices[0]
    if choice.finish_reason == "length":
        assert usage.prompt_tokens + usage.completion_tokens == CONTEXT
    else:
        assert choice.finish_reason == "stop" and usage.prompt_tokens + usage.completion_tokens <= CONTEXT
    # Asking for more than fits is still refused, naming the messages.
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=100,
                                       messages=[{"role": "user", "content": long}])
    assert err.value.code == "context_length_exceeded"


def test_max_chat_tokens_still_bounds_an_answer_without_max_tokens(tmp_path):
    with running_server(worker=False, env={"TUNEWISE_MAX_CHAT_TOKENS": "3"}) as srv:
        reply = srv.client().chat.completions.create(model="gpt-4o-mini", messages=HI, temperature=0)
    assert reply.usage.completion_tokens <= 3
    if reply.choices[0].finish_reason == "length":
        assert reply.usage.completion_tokens == 3


def test_top_p_zero_is_accepted_and_keeps_the_most_likely_token(client):
    greedy = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=8, temperature=0)
    nucleus = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=8, temperature=1,
                                             top_p=0, seed=5)
    assert nucleus.choices[0].message.content == greedy.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=2, top_p=1.5)
    assert err.value.param == "top_p"


ASKING = {
    "logprobs": True,
    "top_logprobs": 3,
    "audio": {"voice": "alloy", "format": "mp3"},
    "modalities": ["text", "audio"],
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "function_call": "auto",
    "prediction": {"type": "content", "content": "Hello"},
    "web_search_options": {},
    "logit_bias": {"50256": -100},
    "frequency_penalty": 0.5,
    "presence_penalty": -1,
    "reasoning_effort": "high",
    "verbosity": "low",
    "moderation": {"model": "omni-moderation-latest"},
}

ASKING_NOTHING = {
    "logprobs": False,
    "top_logprobs": 0,
    "user": "user-1234",
    "safety_identifier": "abc",
    "prompt_cache_key": "k",
    "prompt_cache_retention": "in_memory",
    "service_tier": "auto",
    "store": False,
    "modalities": ["text"],
    "tools": [],
    "tool_choice": "none",
    "parallel_tool_calls": True,
    "frequency_penalty": 0,
    "presence_penalty": 0.0,
    "logit_bias": {},
    "verbosity": "medium",
    "reasoning_effort": "none",
    "audio": None,
    "prediction": None,
}


def test_every_field_of_openais_request_has_a_rule(shared_dir):
    import yaml

    spec = yaml.load((shared_dir / "reference" / "openai-openapi.yaml").read_text(),
                     Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schemas = spec["components"]["schemas"]

    def fields(schema):
        out = set()
        for part in schema.get("allOf", [schema]):
            out |= fields(schemas[part["$ref"].rsplit("/", 1)[1]]) if "$ref" in part else set(part.get("properties", {}))
        return out

    in_spec = fields(schemas["CreateChatCompletionRequest"])
    assert in_spec == HONOURED | ACCEPTED | set(REFUSED)
    assert set(ASKING) == set(REFUSED)  # each refusal below is tested


@pytest.mark.parametrize("field", sorted(ASKING))
def test_fields_that_ask_for_missing_behaviour_are_refused(client, field):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=2,
                                       extra_body={field: ASKING[field]})
    assert err.value.param == field
    assert err.value.code == "unsupported_parameter"
    assert field in err.value.message and "does not provide" in err.value.message


def test_fields_that_ask_for_nothing_pass(client):
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=2,
                                           extra_body=ASKING_NOTHING)
    assert reply.choices[0].message.content is not None
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=2, stream=True,
                                            extra_body={"logprobs": False, "user": "u"})
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] in ("stop", "length")


def test_unknown_field_is_refused_as_openai_does(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=2,
                                       extra_body={"max_output_tokens": 5})
    assert err.value.param == "max_output_tokens" and err.value.code == "unknown_parameter"
    assert "Unrecognized request argument supplied: max_output_tokens" in err.value.message


def test_a_paused_job_under_strict_response_validation(server, client, tmp_path):
    data = write_receipts(tmp_path / "train.jsonl")
    file = client.files.create(file=data.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini",
                                         hyperparameters={"n_epochs": 25, "batch_size": 1})
    wait_for_step(client, job.id, 1)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    try:
        # The lenient SDK (its default) shows `paused`, as OpenAI's own pause endpoint answers.
        assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
        # Strict validation refuses a status outside the spec's enum ...
        strict = server.client(_strict_response_validation=True)
        with pytest.raises(openai.APIResponseValidationError):
            strict.fine_tuning.jobs.retrieve(job.id)
        # ... and a strict client that sends the header gets the spec's statuses only.
        strict = server.client(_strict_response_validation=True,
                               default_headers={"X-Tunewise-Strict-Status": "1"})
        shown = strict.fine_tuning.jobs.retrieve(job.id)
        assert shown.status == "queued" and shown.model_extra["tunewise_status"] == "paused"
        assert {j.id: j.status for j in strict.fine_tuning.jobs.list(limit=100).data}[job.id] == "queued"
        resumed = strict.fine_tuning.jobs.resume(job.id)
        assert resumed.status == "queued" and "tunewise_status" not in resumed.model_extra
        paused = strict.fine_tuning.jobs.pause(job.id)
        assert paused.status == "queued" and paused.model_extra["tunewise_status"] == "paused"
    finally:
        client.fine_tuning.jobs.cancel(job.id)
    assert wait_for(client, job.id).status == "cancelled"
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        plain = http.get(f"/fine_tuning/jobs/{job.id}").json()
    assert plain["status"] == "cancelled" and "tunewise_status" not in plain
