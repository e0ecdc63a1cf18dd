"""The contract test: schemathesis generates requests from OpenAI's OpenAPI spec (``../shared/reference``) for every
operation the server implements and sends them to a real ``tunewise serve``; no answer may be a 5xx, every error must
have OpenAI's error shape and a status OpenAI uses, and every success must match the spec's response schema.

Requests come from three strategies per operation: data that fits the spec, data that does not (negative), and data
that fits with real ids in the path (an uploaded file, a job, a stored completion), so the success paths are reached
too. The default run is bounded to a few examples per operation; the slow run (``TUNEWISE_SLOW=1``) sends many more.
Set ``TUNEWISE_CONTRACT_REPORT=path.json`` to write the counts (requests, 5xx, violations) per operation.

The faults this suite first found (422s, 500s on malformed or huge values) are named in ``KNOWN``: one of them
coming back fails the test with its name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tunewise.serve.testing import running_server, validate_schema, write_receipts

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai-openapi.yaml"

OPERATIONS = [
    ("POST", "/chat/completions"),
    ("GET", "/chat/completions"),
    ("GET", "/chat/completions/{completion_id}"),
    ("POST", "/chat/completions/{completion_id}"),
    ("DELETE", "/chat/completions/{completion_id}"),
    ("GET", "/chat/completions/{completion_id}/messages"),
    ("POST", "/completions"),
    ("GET", "/files"),
    ("POST", "/files"),
    ("GET", "/files/{file_id}"),
    ("GET", "/files/{file_id}/content"),
    ("DELETE", "/files/{file_id}"),
    ("POST", "/fine_tuning/jobs"),
    ("GET", "/fine_tuning/jobs"),
    ("GET", "/fine_tuning/jobs/{fine_tuning_job_id}"),
    ("GET", "/fine_tuning/jobs/{fine_tuning_job_id}/events"),
    ("GET", "/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"),
    ("POST", "/fine_tuning/jobs/{fine_tuning_job_id}/pause"),
    ("POST", "/fine_tuning/jobs/{fine_tuning_job_id}/resume"),
    ("POST", "/fine_tuning/jobs/{fine_tuning_job_id}/cancel"),
    ("GET", "/models"),
    ("GET", "/models/{model}"),
    ("DELETE", "/models/{model}"),
]
"""The operations the README documents, in an order where the destructive ones come after the others."""

SLOW = os.environ.get("TUNEWISE_SLOW") == "1"
EXAMPLES = 60 if SLOW else 6
"""Generated requests per operation and strategy."""
BUDGET_S = 40.0 if SLOW else 3.0
"""Time per operation after which no more requests are sent (the examples left are drawn but not sent)."""
MIN_REQUESTS = 3
"""Requests sent per operation whatever the time (drawing the first examples may take seconds on a busy machine)."""
OPENAI_STATUSES = {400, 401, 403, 404, 405, 409, 413, 429}
"""The 4xx statuses OpenAI's API answers with."""

KNOWN = {
    "422": "malformed parameters answer 422 where OpenAI answers 400",
    "500-overflow": "huge integers answer 500",
    "500-type": "a non-object method.supervised or hyperparameters answers 500",
}


def amend(spec: dict) -> dict:
    """Where OpenAI's spec contradicts itself, the reading this test takes (each a documented amendment)."""
    purposes = spec["components"]["schemas"]["OpenAIFile"]["properties"]["purpose"]["enum"]
    # CreateFileRequest accepts `evals`, but the file object it returns may not show it: a file keeps its purpose.
    if "evals" not in purposes:
        purposes.append("evals")
    # A stored completion's messages are its inputs (OpenAI's own example lists a `user` one), but the list's items
    # reuse the response message, whose role may only be `assistant`.
    item = spec["components"]["schemas"]["ChatCompletionMessageList"]["properties"]["data"]["items"]
    item["allOf"][1]["properties"]["role"] = {"type": "string",
                                              "enum": ["developer", "system", "user", "assistant", "tool", "function"]}
    message = spec["components"]["schemas"]["ChatCompletionResponseMessage"]
    item["allOf"][0] = {**message, "properties": {k: v for k, v in message["properties"].items() if k != "role"}}
    # The list schemas require first_id and last_id as strings, but an empty page has neither: OpenAI answers null.
    for schema in spec["components"]["schemas"].values():
        for name in ("first_id", "last_id"):
            prop = schema.get("properties", {}).get(name) if isinstance(schema, dict) else None
            if prop and prop.get("type") == "string":
                prop["nullable"] = True
    return spec


def _known(status: int, body: str) -> str | None:
    """Which known fault an answer shows, if any."""
    if status == 422:
        return "422"
    if status == 500 and ("OverflowError" in body or "too large" in body or "too big" in body):
        return "500-overflow"
    if status == 500 and ("AttributeError" in body or "TypeError" in body or "ValueError" in body):
        return "500-type"
    return None


@pytest.fixture(scope="module")
def schema():
    if not SPEC.is_file():
        pytest.skip(f"OpenAI's OpenAPI spec not found at {SPEC} (../shared/reference is absent)")
    import schemathesis
    import yaml

    with SPEC.open() as f:
        raw = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return schemathesis.openapi.from_dict(amend(raw))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # No worker: jobs stay in validating_files, so no training competes for the CPU. Short answers keep each chat
    # completion quick.
    with running_server(worker=False, env={"TUNEWISE_MAX_CHAT_TOKENS": "4"}) as srv:
        client = srv.client()
        data = write_receipts(tmp_path_factory.mktemp("contract") / "train.jsonl")
        file = client.files.create(file=data.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini")
        stored = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=2, store=True, metadata={"topic": "contract"})
        srv.ids = {"file_id": file.id, "fine_tuning_job_id": job.id, "completion_id": stored.id,
                   "model": "gpt-4o-mini"}
        yield srv


@pytest.fixture(scope="module")
def report():
    counts: dict[str, dict[str, int]] = {}
    yield counts
    path = os.environ.get("TUNEWISE_CONTRACT_REPORT")
    if path:
        total = {k: sum(c[k] for c in counts.values()) for k in ("requests", "5xx", "violations", "known")}
        Path(path).write_text(json.dumps({"total": total, "operations": counts}, indent=1))


def _check(case, response) -> tuple[str | None, str | None]:
    """(violation, known fault) for one answer."""
    from schemathesis.specs.openapi.checks import response_schema_conformance

    status, text = response.status_code, response.content.decode(errors="replace")
    known = _known(status, text)
    if status >= 500:
        return (None, known) if known else (f"{status}: {text[:300]}", None)
    if status >= 400:
        try:
            validate_schema(SPEC, "ErrorResponse", json.loads(text))
        except (ValueError, AssertionError) as exc:
            return f"{status} without OpenAI's error shape: {exc} {text[:200]}", None
        if status not in OPENAI_STATUSES:
            return (None, known) if known else (f"status {status}, which OpenAI never answers: {text[:200]}", None)
        return None, None
    try:
        case.validate_response(response, checks=[response_schema_conformance])
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises its own failure types (groups)
        return f"{status} not matching the spec's response schema: {str(exc)[:400]}", None
    return None, None


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_keeps_openais_contract(schema, server, report, method, path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    operation = schema[path][method]
    real = {k: v for k, v in server.ids.items() if "{" + k + "}" in path}
    strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    if real:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real))
    headers = {"Authorization": f"Bearer {server.api_key}"}
    base_url = server.base_url
    counts = report.setdefault(f"{method} {path}", {"requests": 0, "5xx": 0, "violations": 0, "known": 0})
    violations: list[str] = []
    known: set[str] = set()
    deadline = time.monotonic() + BUDGET_S

    @settings(max_examples=EXAMPLES * len(strategies), deadline=None, database=None, derandomize=not SLOW,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(strategies))
    def run(case):
        if counts["requests"] >= MIN_REQUESTS and time.monotonic() > deadline:
            return
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        counts["requests"] += 1
        counts["5xx"] += response.status_code >= 500
        violation, fault = _check(case, response)
        if violation:
            counts["violations"] += 1
            sent = case.body if isinstance(case.body, dict | list | str) else ""
            violations.append(f"{case.method} {case.formatted_path} {sent!r:.200} -> {violation}")
        if fault:
            counts["known"] += 1
            known.add(fault)

    run()
    assert counts["requests"] > 0
    assert not violations, f"{len(violations)} of {counts['requests']} answers break the contract:\n" + \
        "\n".join(violations[:10])
    assert not known, "faults found before are back: " + "; ".join(KNOWN[k] for k in sorted(known))


# The faults found before, asked for directly (the generated requests find them only by chance).


@pytest.mark.parametrize("method", [{"type": "supervised", "supervised": "x"},
                                    {"type": "supervised", "supervised": {"hyperparameters": "x"}}])
def test_job_with_a_malformed_method_is_a_400(server, method):
    import httpx

    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        response = http.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini", "training_file":
                                                        server.ids["file_id"], "method": method})
    assert response.status_code == 400 and response.json()["error"]["param"].startswith("method.supervised")


def test_job_with_a_huge_integer_is_a_400(server):
    import httpx

    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        response = http.post("/fine_tuning/jobs", content=json.dumps(
            {"model": "gpt-4o-mini", "training_file": server.ids["file_id"], "hyperparameters": {"n_epochs": 2**1100}}),
            headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["param"].startswith("hyperparameters")


def test_a_malformed_parameter_is_a_400_naming_it(server):
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        server.client().files.list(limit=-1)
    assert err.value.param == "limit"
