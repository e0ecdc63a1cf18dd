"""Stored chat completions through the official SDK against a real server: ``store: true`` and ``metadata``, then
``client.chat.completions.list/retrieve/update/delete`` and ``messages.list``, paginated and scoped by project."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tunewise.serve.store import Store
from tunewise.serve.testing import running_server, validate_schema

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai-openapi.yaml"
SYSTEM = {"role": "system", "content": "You extract product names and prices from receipts. Return JSON only."}


@pytest.fixture(scope="module")
def server():
    with running_server(worker=False) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def made(client):
    """Four stored completions (one streamed) and one that is not stored."""
    out = []
    for i, (model, topic) in enumerate([("gpt-4o-mini", "receipts"), ("gpt-4.1-nano", "receipts"),
                                        ("gpt-4o-mini", "other")]):
        out.append(client.chat.completions.create(
            model=model, max_tokens=3, temperature=0, store=True, metadata={"topic": topic, "n": str(i)},
            messages=[SYSTEM, {"role": "user", "content": [{"type": "text", "text": f"Item {i} "},
                                                           {"type": "text", "text": "$1.00"}]}]))
    client.chat.completions.create(model="gpt-4o-mini", max_tokens=2, messages=[{"role": "user", "content": "no"}])
    stream = client.chat.completions.create(model="gpt-4o-mini", max_tokens=3, temperature=0, store=True,
                                            metadata={"topic": "streamed"}, stream=True,
                                            messages=[{"role": "user", "content": "Tea $2"}])
    chunks = list(stream)
    out.append({"id": chunks[0].id, "text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)})
    return out


def test_stored_completions_are_listed_oldest_first(client, made):
    page = client.chat.completions.list()
    assert [c.id for c in page.data] == [c.id for c in made[:3]] + [made[3]["id"]]
    assert page.has_more is False and page.first_id == made[0].id and page.last_id == made[3]["id"]
    first = page.data[0]
    assert first.object == "chat.completion" and first.model == "gpt-4o-mini"
    assert first.choices[0].message.content == made[0].choices[0].message.content
    assert first.metadata == {"topic": "receipts", "n": "0"} and first.usage.total_tokens == made[0].usage.total_tokens
    newest = client.chat.completions.list(order="desc", limit=2)
    assert [c.id for c in newest.data] == [made[3]["id"], made[2].id] and newest.has_more is True


def test_a_streamed_completion_is_stored_whole(client, made):
    kept = client.chat.completions.retrieve(made[3]["id"])
    assert kept.choices[0].message.content == made[3]["text"] and kept.metadata == {"topic": "streamed"}
    assert kept.usage.completion_tokens >= 1


def test_pagination_follows_after_like_openai(client, made):
    pages = client.chat.completions.list(limit=1)
    assert len(pages.data) == 1 and pages.has_more
    assert [c.id for c in pages] == [c.id for c in made[:3]] + [made[3]["id"]]  # the SDK follows `after`
    rest = client.chat.completions.list(after=made[1].id)
    assert [c.id for c in rest.data] == [made[2].id, made[3]["id"]]
    assert client.chat.completions.list(after="chatcmpl-unknown").data == []


def test_filters_by_model_and_metadata(client, made):
    assert [c.id for c in client.chat.completions.list(model="gpt-4.1-nano")] == [made[1].id]
    assert [c.id for c in client.chat.completions.list(metadata={"topic": "receipts"})] == [made[0].id, made[1].id]
    both = client.chat.completions.list(model="gpt-4o-mini", metadata={"topic": "receipts", "n": "0"})
    assert [c.id for c in both] == [made[0].id]
    assert client.chat.completions.list(metadata={"topic": "nothing"}).data == []


def test_messages_are_the_inputs(client, made):
    messages = client.chat.completions.messages.list(made[0].id)
    assert [m.id for m in messages.data] == [f"{made[0].id}-0", f"{made[0].id}-1"]
    assert [m.role for m in messages.data] == ["system", "user"]
    assert messages.data[0].content == SYSTEM["content"] and messages.data[0].content_parts is None
    assert messages.data[1].content == "Item 0 $1.00"
    assert [p.text for p in messages.data[1].content_parts] == ["Item 0 ", "$1.00"]
    one = client.chat.completions.messages.list(made[0].id, limit=1, order="desc")
    assert [m.id for m in one.data] == [f"{made[0].id}-1"] and one.has_more
    assert [m.role for m in client.chat.completions.messages.list(made[0].id, limit=1)] == ["system", "user"]


def test_update_replaces_metadata(client, made):
    updated = client.chat.completions.update(made[2].id, metadata={"topic": "receipts", "reviewed": "yes"})
    assert updated.id == made[2].id and updated.metadata == {"topic": "receipts", "reviewed": "yes"}
    assert client.chat.completions.retrieve(made[2].id).metadata == updated.metadata
    assert made[2].id in [c.id for c in client.chat.completions.list(metadata={"reviewed": "yes"})]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.update(made[2].id, metadata={f"k{i}": "v" for i in range(17)})
    assert err.value.param == "metadata"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.update(made[2].id, metadata={"k": 3})
    assert err.value.param == "metadata.k"


def test_bad_metadata_on_create_is_refused(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=1, store=True,
                                       messages=[{"role": "user", "content": "x"}], metadata={"k": "v" * 513})
    assert err.value.param == "metadata.k" and "512" in err.value.message


def test_projects_are_isolated(server, made):
    other = server.client(api_key=server.create_key("other-team"))
    assert other.chat.completions.list().data == []
    for call in (lambda: other.chat.completions.retrieve(made[0].id),
                 lambda: other.chat.completions.update(made[0].id, metadata={"a": "b"}),
                 lambda: other.chat.completions.delete(made[0].id),
                 lambda: other.chat.completions.messages.list(made[0].id)):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.param == "completion_id"
    mine = other.chat.completions.create(model="gpt-4o-mini", max_tokens=1, store=True,
                                         messages=[{"role": "user", "content": "x"}])
    assert [c.id for c in other.chat.completions.list()] == [mine.id]
    assert mine.id not in [c.id for c in server.client().chat.completions.list()]


def test_responses_match_openai_schemas(server, client, made):
    if not SPEC.is_file():
        pytest.skip(f"OpenAI's OpenAPI spec not found at {SPEC} (../shared is absent)")
    raw = client.with_raw_response
    validate_schema(SPEC, "ChatCompletionList", json.loads(raw.chat.completions.list().http_response.text))
    validate_schema(SPEC, "CreateChatCompletionResponse",
                    json.loads(raw.chat.completions.retrieve(made[0].id).http_response.text))
    validate_schema(SPEC, "CreateChatCompletionResponse", json.loads(
        raw.chat.completions.update(made[0].id, metadata={"topic": "receipts", "n": "0"}).http_response.text))


def test_delete(server, client, made):
    gone = client.chat.completions.delete(made[3]["id"])
    assert gone.deleted is True and gone.id == made[3]["id"] and gone.object == "chat.completion.deleted"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(made[3]["id"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.delete(made[3]["id"])
    assert made[3]["id"] not in [c.id for c in client.chat.completions.list()]
    store = Store(server.data_dir)
    try:
        assert "0006_stored_completions" in store.applied_migrations()
        assert store.one("SELECT COUNT(*) AS n FROM stored_completions WHERE id = ?", made[3]["id"])["n"] == 0
    finally:
        store.close()
