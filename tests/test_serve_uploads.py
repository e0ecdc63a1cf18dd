"""OpenAI's Uploads and Files' ``expires_after`` through the official SDK against a real server on 127.0.0.1:
parts streamed to disk and bounded as they stream, assembled in ``part_ids`` order with an optional md5, validated
like an upload, cancelled, expired; ``client.uploads.upload_file_chunked`` end to end."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import httpx
import openai
import pytest

from tunewise.serve.store import Store
from tunewise.serve.testing import running_server, validate_schema, write_receipts
from tunewise.serve.worker import purge_deleted_files

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai-openapi.yaml"
PART_LIMIT = 4096


@pytest.fixture(scope="module")
def server():
    with running_server(worker=False, env={"TUNEWISE_MAX_PART_BYTES": str(PART_LIMIT)}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def receipts(tmp_path_factory) -> bytes:
    return write_receipts(tmp_path_factory.mktemp("up") / "receipts.jsonl").read_bytes()


def _spec(name: str, obj) -> None:
    if SPEC.is_file():
        validate_schema(SPEC, name, obj.model_dump(exclude_unset=True) if hasattr(obj, "model_dump") else obj)


def test_chunked_helper_assembles_a_validated_file(client, receipts, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(receipts)
    upload = client.uploads.upload_file_chunked(file=path, mime_type="text/jsonl", purpose="fine-tune",
                                                part_size=1000, md5=hashlib.md5(receipts).hexdigest())
    assert upload.object == "upload" and upload.status == "completed" and upload.bytes == len(receipts)
    assert upload.filename == "train.jsonl" and upload.purpose == "fine-tune"
    assert upload.file is not None and upload.file.bytes == len(receipts) and upload.file.purpose == "fine-tune"
    _spec("Upload", upload)
    assert client.files.content(upload.file.id).read() == receipts
    assert upload.file.id in [f.id for f in client.files.list().data]
    # The assembled file is a training file like any other: a job takes it.
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload.file.id)
    assert job.training_file == upload.file.id
    client.fine_tuning.jobs.cancel(job.id)


def test_parts_in_parallel_order_is_part_ids(client, receipts):
    upload = client.uploads.create(filename="r.jsonl", purpose="fine-tune", bytes=len(receipts),
                                   mime_type="text/jsonl")
    assert upload.status == "pending" and upload.file is None and upload.expires_at - upload.created_at == 3600
    _spec("Upload", upload)
    half = len(receipts) // 2
    # Sent second half first: the order is the one complete names, not the arrival order.
    second = client.uploads.parts.create(upload.id, data=receipts[half:])
    first = client.uploads.parts.create(upload.id, data=receipts[:half])
    assert first.object == "upload.part" and first.upload_id == upload.id and first.id.startswith("part_")
    _spec("UploadPart", first)
    done = client.uploads.complete(upload.id, part_ids=[first.id, second.id])
    assert done.status == "completed"
    assert client.files.content(done.file.id).read() == receipts
    with pytest.raises(openai.ConflictError) as err:  # completed: no more parts, no second complete
        client.uploads.parts.create(upload.id, data=b"x")
    assert err.value.code == "upload_not_pending"


def test_wrong_order_or_md5_or_size_are_400s_naming_the_field(client, receipts):
    upload = client.uploads.create(filename="r.jsonl", purpose="fine-tune", bytes=len(receipts),
                                   mime_type="text/jsonl")
    half = len(receipts) // 2
    a = client.uploads.parts.create(upload.id, data=receipts[:half])
    b = client.uploads.parts.create(upload.id, data=receipts[half:])
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload.id, part_ids=[a.id, b.id], md5="0" * 32)
    assert err.value.code == "md5_mismatch" and err.value.body["param"] == "md5"
    with pytest.raises(openai.BadRequestError) as err:  # half the bytes
        client.uploads.complete(upload.id, part_ids=[a.id])
    assert err.value.body["param"] == "part_ids" and str(len(receipts)) in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload.id, part_ids=[a.id, "part_nope"])
    assert err.value.body["param"] == "part_ids" and "part_nope" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:  # swapped: lines split mid-JSON, the validator refuses
        client.uploads.complete(upload.id, part_ids=[b.id, a.id])
    assert err.value.code == "invalid_file_format"
    done = client.uploads.complete(upload.id, part_ids=[a.id, b.id], md5=hashlib.md5(receipts).hexdigest())
    assert done.status == "completed"


def test_invalid_training_data_is_refused_like_an_upload(client):
    data = b'{"messages": [{"role": "user", "content": "hi"}]}\n' * 3
    upload = client.uploads.create(filename="bad.jsonl", purpose="fine-tune", bytes=len(data), mime_type="text/jsonl")
    part = client.uploads.parts.create(upload.id, data=data)
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload.id, part_ids=[part.id])
    assert err.value.code == "invalid_file_format" and "line" in err.value.message
    assert client.uploads.cancel(upload.id).status == "cancelled"


def test_create_is_checked(client):
    for kwargs, param in [({"bytes": 9 * 1024 ** 3}, "bytes"), ({"bytes": 0}, "bytes"),
                          ({"purpose": "nope"}, "purpose"), ({"filename": ""}, "filename"),
                          ({"mime_type": ""}, "mime_type")]:
        args = {"filename": "a.jsonl", "purpose": "fine-tune", "bytes": 10, "mime_type": "text/jsonl", **kwargs}
        with pytest.raises(openai.BadRequestError) as err:
            client.uploads.create(**args)
        assert err.value.body["param"] == param, kwargs
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.create(filename="a.jsonl", purpose="fine-tune", bytes=10, mime_type="text/jsonl",
                              expires_after={"anchor": "created_at", "seconds": 5})
    assert err.value.body["param"] == "expires_after.seconds"


def test_a_part_is_bounded_as_it_streams(server, client):
    upload = client.uploads.create(filename="big.bin", purpose="batch", bytes=100 * PART_LIMIT,
                                   mime_type="application/octet-stream")
    with pytest.raises(openai.APIStatusError) as err:
        client.uploads.parts.create(upload.id, data=b"x" * (PART_LIMIT + 1))
    assert err.value.status_code == 413 and err.value.body["param"] == "data"
    # Chunked (no Content-Length): the guard counts the bytes as they arrive and ends the request past the limit.
    boundary = "b0undary"

    def body():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="data"; filename="d"\r\n\r\n'.encode()
        for _ in range(PART_LIMIT * 40 // 1024):
            yield b"y" * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(f"{server.base_url}/uploads/{upload.id}/parts", content=body(),
                   headers={"Authorization": f"Bearer {server.api_key}",
                            "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    # Nothing of the refused parts stayed on disk; a part within the limit still works.
    assert not any((server.data_dir / "files" / "uploads").glob(f"{upload.id}.*"))
    part = client.uploads.parts.create(upload.id, data=b"z" * PART_LIMIT)
    assert (server.data_dir / "files" / "uploads" / f"{upload.id}.{part.id}").stat().st_size == PART_LIMIT
    # More than the upload declared: refused too.
    small = client.uploads.create(filename="s.bin", purpose="batch", bytes=10, mime_type="application/octet-stream")
    with pytest.raises(openai.APIStatusError) as err:
        client.uploads.parts.create(small.id, data=b"q" * 11)
    assert err.value.status_code == 413


def test_cancel_removes_the_parts(server, client):
    upload = client.uploads.create(filename="c.bin", purpose="batch", bytes=20, mime_type="application/octet-stream")
    client.uploads.parts.create(upload.id, data=b"1" * 10)
    assert list((server.data_dir / "files" / "uploads").glob(f"{upload.id}.*"))
    cancelled = client.uploads.cancel(upload.id)
    assert cancelled.status == "cancelled" and cancelled.file is None
    assert not list((server.data_dir / "files" / "uploads").glob(f"{upload.id}.*"))
    with pytest.raises(openai.ConflictError):
        client.uploads.cancel(upload.id)
    with pytest.raises(openai.NotFoundError):
        client.uploads.cancel("upload_doesnotexist")


def test_uploads_are_scoped_by_project(server, client):
    upload = client.uploads.create(filename="p.bin", purpose="batch", bytes=4, mime_type="application/octet-stream")
    other = server.client(api_key=server.create_key("other"))
    with pytest.raises(openai.NotFoundError):
        other.uploads.parts.create(upload.id, data=b"abcd")
    with pytest.raises(openai.NotFoundError):
        other.uploads.cancel(upload.id)


def test_expired_upload_takes_nothing_and_frees_its_parts(server, client):
    upload = client.uploads.create(filename="e.bin", purpose="batch", bytes=8, mime_type="application/octet-stream")
    part = client.uploads.parts.create(upload.id, data=b"12345678")
    Store(server.data_dir).db.execute("UPDATE uploads SET expires_at = created_at - 1 WHERE id = ?", (upload.id,))
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload.id, part_ids=[part.id])
    assert err.value.code == "upload_expired" and "upload_expiry_s" in err.value.message
    assert not list((server.data_dir / "files" / "uploads").glob(f"{upload.id}.*"))


def test_file_expires_after(server, client, receipts):
    file = client.files.create(file=("t.jsonl", io.BytesIO(receipts)), purpose="fine-tune",
                               expires_after={"anchor": "created_at", "seconds": 3600})
    assert file.expires_at == file.created_at + 3600
    _spec("OpenAIFile", file)
    kept = client.files.create(file=("k.jsonl", io.BytesIO(receipts)), purpose="fine-tune")
    assert kept.expires_at is None
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("x.jsonl", io.BytesIO(receipts)), purpose="fine-tune",
                            expires_after={"anchor": "created_at", "seconds": 60})
    assert err.value.body["param"] == "expires_after.seconds"
    # Past its expiry (moved into the past in the database): gone from the list, retrieve and jobs.
    Store(server.data_dir).db.execute("UPDATE files SET expires_at = ? WHERE id = ?", (file.created_at - 1, file.id))
    assert file.id not in [f.id for f in client.files.list().data]
    assert kept.id in [f.id for f in client.files.list().data]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(file.id)
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id)
    assert err.value.body["param"] == "training_file"
    # The worker's purge removes the expired file's bytes (no started job uses them), and keeps the others'.
    store = Store(server.data_dir)
    paths = {r["id"]: Path(r["path"]) for r in store.all("SELECT id, path FROM files WHERE id IN (?, ?)",
                                                          file.id, kept.id)}
    assert paths[file.id].is_file()
    assert purge_deleted_files(store) >= 1
    assert not paths[file.id].exists() and paths[kept.id].is_file()


def test_upload_expires_after_applies_to_its_file(client, receipts):
    upload = client.uploads.create(filename="x.jsonl", purpose="fine-tune", bytes=len(receipts),
                                   mime_type="text/jsonl", expires_after={"anchor": "created_at", "seconds": 7200})
    part = client.uploads.parts.create(upload.id, data=receipts)
    done = client.uploads.complete(upload.id, part_ids=[part.id])
    assert done.file.expires_at == done.file.created_at + 7200
    assert json.loads(done.model_dump_json())["file"]["expires_at"] == done.file.expires_at
