"""Helpers shared by test files (importable as ``helpers``: pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

from tunewise.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real CLI entry point, in-process: exit code, stdout, stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def wandb_history(path) -> tuple[list[dict], list]:
    """The history rows and every record of an offline W&B run file (``run-*.wandb``), parsed with W&B's own
    protobuf ``Record``. wandb 0.31 ships no Python reader for the file (its writer is the Go core), so this
    reads its framing: a 7-byte header (``:W&B``, magic 0xBEE1, version) then LevelDB log blocks of 32 KiB."""
    import json
    import struct
    from pathlib import Path

    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, (ident, magic)
    pos, block, buf, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL/FIRST start a record, MIDDLE/LAST continue it
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    return history, records
