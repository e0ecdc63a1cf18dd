"""Hostile requests against a real ``tunewise serve`` on 127.0.0.1: every one answers a 4xx in OpenAI's error
shape naming the parameter, never a 500, and the same keep-alive connection serves the next request. Oversize
bodies (with and without a key, chunked or not) are refused as they stream, with the server's memory checked."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import signal
import stat
import time
import urllib.parse

import openai
import psutil
import pytest

from tunewise.serve.testing import running_server, wait_for, wait_for_step, write_receipts

MAX_REQUEST = 1 << 20
MAX_UPLOAD = 2 << 20
QUOTA = 3 << 20


@pytest.fixture(scope="module")
def server():
    env = {"TUNEWISE_MAX_REQUEST_BYTES": str(MAX_REQUEST), "TUNEWISE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
           "TUNEWISE_STORAGE_QUOTA_BYTES": str(QUOTA), "TUNEWISE_WORKER_POLL_S": "0.05"}
    with running_server(env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def training_file(server, client, tmp_path_factory):
    path = write_receipts(tmp_path_factory.mktemp("data") / "train.jsonl")
    return client.files.create(file=path.open("rb"), purpose="fine-tune").id


SEEN: list[tuple[int, str | None]] = []  # (status, request id) of every answer read through a Conn


class Conn:
    """One keep-alive HTTP/1.1 connection to the server (http.client), to see whether it survives."""

    def __init__(self, server, key: str | None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.key = key
        self.sock = None

    def headers(self, extra: dict | None = None, key: bool = True) -> dict:
        h = {"Authorization": f"Bearer {self.key}"} if key and self.key else {}
        return {**h, **(extra or {})}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                key: bool = True) -> tuple[int, dict, dict]:
        self.conn.request(method, path, body=body, headers=self.headers(headers, key))
        return self.read()

    def read(self) -> tuple[int, dict, dict]:
        resp = self.conn.getresponse()
        data = resp.read()
        SEEN.append((resp.status, resp.getheader("x-request-id")))
        assert not resp.will_close, "the server closed the keep-alive connection"
        if self.sock is None:
            self.sock = self.conn.sock
        assert self.conn.sock is self.sock, "a new connection was opened"
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            payload = {"raw": data[:200]}
        return resp.status, dict(resp.getheaders()), payload

    def still_works(self) -> None:
        status, _, body = self.request("GET", "/v1/models")
        assert status == 200 and body["object"] == "list"

    def chunked(self, method: str, path: str, chunks, headers: dict | None = None, key: bool = True):
        self.conn.putrequest(method, path)
        for name, value in self.headers({"Transfer-Encoding": "chunked", **(headers or {})}, key).items():
            self.conn.putheader(name, value)
        self.conn.endheaders()
        for chunk in chunks:
            self.conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.conn.send(b"0\r\n\r\n")
        return self.read()


def assert_error(status: int, headers: dict, body: dict, want_status: int, param: str | None = "any") -> dict:
    assert status == want_status, (status, body)
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"]
    if param != "any":
        assert err["param"] == param, err
    assert "x-request-id" in {k.lower() for k in headers}
    assert "Traceback" not in err["message"]
    return err


def deep_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


BIG = int("9" * 400)


def job_bodies(training_file: str) -> list[tuple[str, dict, str]]:
    base = {"model": "gpt-4o-mini", "training_file": training_file}

    def supervised(hyper):
        return {**base, "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}}}

    return [
        ("supervised not an object", {**base, "method": {"type": "supervised", "supervised": [1, 2]}},
         "method.supervised"),
        ("supervised a string", {**base, "method": {"type": "supervised", "supervised": "x"}}, "method.supervised"),
        ("hyperparameters a string", {**base, "method": {"type": "supervised", "supervised": {
            "hyperparameters": "abc"}}}, "method.supervised.hyperparameters"),
        ("hyperparameters a list", {**base, "method": {"type": "supervised", "supervised": {
            "hyperparameters": [["n_epochs", 2]]}}}, "method.supervised.hyperparameters"),
        ("method.type a list", {**base, "method": {"type": ["supervised"]}}, "method.type"),
        ("n_epochs a list", supervised({"n_epochs": [3]}), "hyperparameters.n_epochs"),
        ("n_epochs 400 digits", supervised({"n_epochs": BIG}), "hyperparameters.n_epochs"),
        ("batch_size 400 digits", supervised({"batch_size": BIG}), "hyperparameters.batch_size"),
        ("batch_size -400 digits", supervised({"batch_size": -BIG}), "hyperparameters.batch_size"),
        ("learning rate 1e308", supervised({"learning_rate_multiplier": 1e308}),
         "hyperparameters.learning_rate_multiplier"),
        ("eval.limit 400 digits", {**base, "eval": {"file": training_file, "limit": BIG}}, "eval.limit"),
        ("eval.max_tokens 400 digits", {**base, "eval": {"file": training_file, "max_tokens": -BIG}},
         "eval.max_tokens"),
        ("eval.schema nested 300 levels", {**base, "eval": {"file": training_file, "schema": deep_schema(300)}},
         "eval.schema"),
        ("17 metadata pairs", {**base, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ("metadata key of 65", {**base, "metadata": {"k" * 65: "v"}}, "any"),
        ("metadata value of 513", {**base, "metadata": {"k": "v" * 513}}, "metadata.k"),
        ("metadata value a number", {**base, "metadata": {"k": 5}}, "metadata.k"),
        ("model of 300 characters", {**base, "model": "m" * 300}, "model"),
        ("suffix of 65 characters", {**base, "suffix": "s" * 65}, "suffix"),
        ("training_file a list", {**base, "training_file": ["x"]}, "training_file"),
        ("seed 400 digits", {**base, "seed": BIG}, "seed"),
    ]


def test_job_shapes_answer_400_naming_the_parameter(server, training_file):
    conn = Conn(server, server.api_key)
    for name, payload, param in job_bodies(training_file):
        status, headers, body = conn.request("POST", "/v1/fine_tuning/jobs", json.dumps(payload).encode(),
                                             {"Content-Type": "application/json"})
        err = assert_error(status, headers, body, 400, param)
        if name == "metadata key of 65":
            assert err["param"].startswith("metadata.") and "64" in err["message"]
        conn.still_works()


def test_the_sdk_raises_bad_request_with_param(client, training_file):
    with pytest.raises(openai.BadRequestError) as err:
        client.files.list(limit=0)
    assert err.value.param == "limit" and err.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file,
                                       hyperparameters={"n_epochs": BIG})
    assert err.value.param == "hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.list(metadata={"a\x00b": "x"})
    assert err.value.param == "metadata"


def test_request_bodies_that_are_not_json(server):
    conn = Conn(server, server.api_key)
    for raw in (b"{not json", b"\xff\xfe\x00", b'{"model": ' + b"[" * 20000 + b"]" * 20000 + b"}",
                b'{"model": "gpt-4o-mini", "messages": [], "seed": ' + b"9" * 5000 + b"}", b"[]", b'"x"'):
        for path in ("/v1/chat/completions", "/v1/fine_tuning/jobs"):
            status, headers, body = conn.request("POST", path, raw, {"Content-Type": "application/json"})
            assert_error(status, headers, body, 400)
            conn.still_works()


def test_list_filters_and_paths(server):
    conn = Conn(server, server.api_key)
    for query, param in ((f"metadata[{urllib.parse.quote(chr(0))}]=x", "metadata"),
                         (f"metadata[{'k' * 65}]=x", "metadata"), ("limit=" + "9" * 400, "limit"),
                         ("limit=abc", "limit"), ("after=" + "x" * 10000, None)):
        status, headers, body = conn.request("GET", "/v1/fine_tuning/jobs?" + query)
        if param is None:
            assert status == 200 and body["data"] == []
        else:
            assert_error(status, headers, body, 400, param)
        conn.still_works()
    status, headers, body = conn.request("GET", "/v1/fine_tuning/jobs?metadata[team]=a")
    assert status == 200
    # 405 names the allowed methods.
    status, headers, body = conn.request("PUT", "/v1/files")
    assert_error(status, headers, body, 405)
    assert {m.strip() for m in headers["allow"].split(",")} == {"GET", "POST"}
    conn.still_works()


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "tunewiseboundary") -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


HOSTILE_LINES = [
    "[" * 1500 + "]" * 1500,
    '{"messages": [], "n": ' + "9" * 5000 + "}",
    json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [{
        "id": "c", "type": "function", "function": {"name": "f", "arguments": "[" * 1500 + "]" * 1500}}]}]}),
]


def test_uploads(server, tmp_path):
    conn = Conn(server, server.api_key)
    ctype = {"Content-Type": "multipart/form-data; boundary=tunewiseboundary"}
    good = write_receipts(tmp_path / "t.jsonl").read_bytes()
    cases = [
        ("garbage multipart", b"--tunewiseboundary\r\n\x00\x01garbage" * 50, "file"),
        ("no closing boundary", b"--tunewiseboundary\r\nContent-Disposition: form-data; name=\"file\"", "file"),
        ("two file parts", multipart([("purpose", None, b"fine-tune"), ("file", "a.jsonl", good),
                                      ("file", "b.jsonl", good)]), "file"),
        ("100 KB file name", multipart([("purpose", None, b"fine-tune"), ("file", "x" * 100_000, good)]), "file"),
        ("bad purpose", multipart([("purpose", None, b"x" * 5000), ("file", "a.jsonl", good)]), "purpose"),
    ]
    for line in HOSTILE_LINES:
        cases.append(("hostile line", multipart([("purpose", None, b"fine-tune"),
                                                 ("file", "h.jsonl", good + line.encode() + b"\n")]), "file"))
    for name, payload, param in cases:
        status, headers, body = conn.request("POST", "/v1/files", payload, ctype)
        err = assert_error(status, headers, body, 400, param)
        if name == "hostile line":
            assert err["code"] == "invalid_file_format" and "line 13" in err["message"], err
        conn.still_works()
    # The dashboard's validator answers the same lines with findings.
    for line in HOSTILE_LINES:
        status, _, body = conn.request("POST", "/v1/dashboard/validate", good + line.encode() + b"\n")
        assert status == 200 and not body["ok"]
        assert any(f["line"] == 13 and f["severity"] == "error" for f in body["findings"])
        conn.still_works()


def test_chat_shapes(server):
    conn = Conn(server, server.api_key)
    messages = [{"role": "user", "content": "hi"}]
    enum = {"type": "object", "properties": {"a": {"enum": [f"v{i}" for i in range(100_000)]}}, "required": ["a"]}
    cases = [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": deep_schema(150)}}, "response_format"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": enum}}, "response_format"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
            f"p{i}": {"type": "string"} for i in range(6000)}}}}, "response_format"),
        ({"type": "json_schema", "json_schema": "nope"}, "response_format"),
        ({"type": 5}, "response_format"),
    ]
    for response_format, param in cases:
        payload = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 4, "response_format": response_format}
        status, headers, body = conn.request("POST", "/v1/chat/completions", json.dumps(payload).encode(),
                                             {"Content-Type": "application/json"})
        assert_error(status, headers, body, 400, param)
        conn.still_works()
    for payload, param in (({"model": "m" * 300, "messages": messages}, "model"),
                           ({"model": "gpt-4o-mini", "messages": "hi"}, "messages"),
                           ({"model": "gpt-4o-mini", "messages": messages, "max_tokens": BIG}, "max_tokens")):
        status, headers, body = conn.request("POST", "/v1/chat/completions", json.dumps(payload).encode(),
                                             {"Content-Type": "application/json"})
        assert_error(status, headers, body, 400, param)
        conn.still_works()


def test_dashboard_shapes(server, training_file):
    conn = Conn(server, server.api_key)
    base = {"model": "gpt-4o-mini", "prompt_tokens": 1500, "ft_prompt_tokens": 200, "output_tokens": 150,
            "calls_per_month": 1000}
    for name, value in (("prompt_tokens", "inf"), ("calls_per_month", "1e308"), ("horizon_months", "1e-320"),
                        ("output_tokens", "nan"), ("training_cost", "-inf"), ("training_tokens", "9" * 400)):
        query = urllib.parse.urlencode({**base, name: value})
        status, headers, body = conn.request("GET", "/v1/dashboard/breakeven?" + query)
        assert_error(status, headers, body, 400, name)
        conn.still_works()
    status, _, body = conn.request("GET", "/v1/dashboard/breakeven?" + urllib.parse.urlencode(
        {**base, "prompt_tokens": "1e-320"}))
    assert status == 200
    # model= takes catalog and registry names only, never a path on the server: an existing directory and a
    # missing one get the same answer (no oracle), and no tokenizer is loaded from either.
    answers = set()
    for model in ("/tmp", str(server.data_dir), "../../etc", "/nonexistent"):
        for path in ("/v1/dashboard/validate", f"/v1/dashboard/files/{training_file}/validation",
                     f"/v1/dashboard/files/{training_file}/estimate"):
            method = "POST" if path.endswith("/validate") else "GET"
            status, headers, body = conn.request(method, f"{path}?model={urllib.parse.quote(model)}",
                                                 b'{"messages": []}\n' if method == "POST" else None)
            err = assert_error(status, headers, body, 400, "model")
            answers.add(err["message"].replace(repr(model), "NAME"))
            conn.still_works()
    assert len(answers) == 1, answers
    status, headers, body = conn.request("GET", "/v1/dashboard/reports/nothere")
    err = assert_error(status, headers, body, 404, "name")
    assert str(server.data_dir) not in json.dumps(body) and "/tmp" not in err["message"]


def rss(server) -> int:
    proc = psutil.Process(server.pid)
    return proc.memory_info().rss


def test_oversize_bodies_are_refused_as_they_stream(server, tmp_path):
    chunk = b"x" * (1 << 20)
    n_chunks = 40  # 40 MB against a 1 MB limit
    conn = Conn(server, server.api_key)
    conn.still_works()
    before = rss(server)
    # Without a key: 401 before a byte of the body is read, chunked or with Content-Length.
    status, headers, body = conn.chunked("POST", "/v1/chat/completions", [chunk] * n_chunks, key=False)
    assert assert_error(status, headers, body, 401)["code"] == "missing_api_key"
    conn.request("GET", "/health")
    status, headers, body = conn.request("POST", "/v1/fine_tuning/jobs", chunk * n_chunks, key=False)
    assert_error(status, headers, body, 401)
    other = Conn(server, "sk-tw-wrong")
    status, headers, body = other.chunked("POST", "/v1/files", [chunk] * n_chunks,
                                          {"Content-Type": "multipart/form-data; boundary=b"})
    assert assert_error(status, headers, body, 401)["code"] == "invalid_api_key"
    # With a key: counted as it streams, 413 at the limit.
    status, headers, body = conn.chunked("POST", "/v1/chat/completions", [chunk] * n_chunks,
                                         {"Content-Type": "application/json"})
    err = assert_error(status, headers, body, 413)
    assert err["code"] == "request_too_large" and "max_request_bytes" in err["message"]
    conn.still_works()
    status, headers, body = conn.request("POST", "/v1/chat/completions", chunk * n_chunks,
                                         {"Content-Type": "application/json"})
    assert assert_error(status, headers, body, 413)["code"] == "request_too_large"
    conn.still_works()
    status, headers, body = conn.chunked("POST", "/v1/dashboard/validate", [chunk] * n_chunks)
    assert assert_error(status, headers, body, 413)["code"] == "request_too_large"
    conn.still_works()
    upload = [b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'] + [chunk] * 10
    status, headers, body = conn.chunked("POST", "/v1/files", upload,
                                         {"Content-Type": "multipart/form-data; boundary=b"})
    assert assert_error(status, headers, body, 413, "file")["code"] == "file_too_large"
    conn.still_works()
    grown = rss(server) - before
    assert grown < 60 << 20, f"server RSS grew by {grown >> 20} MB"


def test_storage_quota(server, tmp_path):
    conn = Conn(server, server.api_key)
    line = json.dumps({"messages": [{"role": "user", "content": "x" * 1000}, {"role": "assistant",
                                                                             "content": "y"}]}).encode() + b"\n"
    big = line * ((1600 << 10) // len(line))  # 1.6 MB: two fit under the upload limit, not under the quota
    payload = multipart([("purpose", None, b"fine-tune"), ("file", "big.jsonl", big)])
    ctype = {"Content-Type": "multipart/form-data; boundary=tunewiseboundary"}
    status, _, body = conn.request("POST", "/v1/files", payload, ctype)
    assert status == 200, body
    status, headers, body = conn.request("POST", "/v1/files", payload, ctype)
    err = assert_error(status, headers, body, 413, "file")
    assert err["code"] == "storage_quota_exceeded" and "storage_quota_bytes" in err["message"]
    conn.still_works()
    # Deleting a file frees its share of the quota.
    first = conn.request("GET", "/v1/files?purpose=fine-tune")[2]["data"][0]
    assert conn.request("DELETE", f"/v1/files/{first['id']}")[0] == 200
    status, _, body = conn.request("POST", "/v1/files", payload, ctype)
    assert status == 200, body


def test_a_500_says_internal_error_with_a_logged_request_id(server, client, tmp_path):
    path = write_receipts(tmp_path / "t.jsonl")
    file = client.files.create(file=path.open("rb"), purpose="fine-tune")
    stored = server.data_dir / "files" / f"{file.id}.jsonl"
    stored.unlink()  # the database says it exists, the bytes are gone: a server-side fault
    conn = Conn(server, server.api_key)
    status, headers, body = conn.request("GET", f"/v1/files/{file.id}/content")
    err = assert_error(status, headers, body, 500)
    request_id = {k.lower(): v for k, v in headers.items()}["x-request-id"]
    assert err["code"] == "internal_error" and "internal error" in err["message"] and request_id in err["message"]
    assert str(stored) not in err["message"] and "RuntimeError" not in err["message"]
    assert request_id in server.output()
    conn.still_works()


def test_no_answer_above_was_a_5xx_but_the_deliberate_one():
    fives = [status for status, _ in SEEN if status >= 500]
    assert len(SEEN) > 100 and fives == [500], (len(SEEN), fives)
    assert all(request_id and request_id.startswith("req_") for _, request_id in SEEN)


def test_owner_only_modes(server, training_file):
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    for sub in ("files", "jobs"):
        assert stat.S_IMODE((server.data_dir / sub).stat().st_mode) == 0o700
    assert stat.S_IMODE((server.data_dir / "tunewise.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((server.data_dir / "files" / f"{training_file}.jsonl").stat().st_mode) == 0o600


def test_a_running_job_keeps_its_deleted_file_and_reports_each_step_once(server, client, training_file, tmp_path):
    path = write_receipts(tmp_path / "t.jsonl")
    file = client.files.create(file=path.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini",
                                         hyperparameters={"n_epochs": 3, "batch_size": 1}, seed=7)
    wait_for_step(client, job.id, 14)  # past the epoch-end save at step 12
    client.files.delete(file.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)
    # The worker crashes (the server starts a new one): the resumed run trains again the steps after its save.
    os.kill(int((server.data_dir / "worker.pid").read_text()), signal.SIGKILL)
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=10000).data)
    steps = [e.data["step"] for e in events if e.type == "metrics" and e.message.startswith("Step ")]
    assert sorted(steps) == list(range(1, 37)), "one metrics event per step"
    # Once the job has ended, the deleted file's bytes go.
    stored = server.data_dir / "files" / f"{file.id}.jsonl"
    deadline = time.monotonic() + 10
    while stored.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stored.exists()
    lock = open(server.data_dir / "worker.lock", "w")  # held by the live worker
    with pytest.raises(BlockingIOError):
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.close()
