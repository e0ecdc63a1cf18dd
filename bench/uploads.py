"""Server memory while a large file arrives through OpenAI's Uploads API (the SDK's chunked helper).

    .venv/bin/python bench/uploads.py [--mb 512] [--part-mb 64]

Starts a real server on 127.0.0.1 (no worker), writes a JSONL file of about MB megabytes (purpose ``batch``, so
the time is the transfer and assembly, not the training-data validator), uploads it with
``client.uploads.upload_file_chunked`` in parts of PART_MB, and samples the server process's resident memory every
20 ms. Prints the file size, the wall time, the throughput, and the server's RSS before and at its peak: bounded
memory means the peak grows by about a part's buffers, not by the file's size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil

from tunewise.serve.testing import running_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512, help="size of the file to upload, in MB (default 512)")
    parser.add_argument("--part-mb", type=int, default=64, help="part size in MB (default 64, OpenAI's limit)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tunewise-upload-bench-") as tmp:
        path = Path(tmp) / "big.jsonl"
        line = (json.dumps({"custom_id": "x", "body": {"text": "y" * 1000}}) + "\n").encode()
        with open(path, "wb") as f:
            for _ in range(args.mb * 1024 * 1024 // len(line)):
                f.write(line)
        size = path.stat().st_size
        with running_server(Path(tmp) / "server", worker=False) as server:
            proc = psutil.Process(server.pid)
            client = server.client(timeout=600)
            client.models.list()  # warm
            before = proc.memory_info().rss
            peak = [before]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            upload = client.uploads.upload_file_chunked(file=path, mime_type="application/jsonl", purpose="batch",
                                                        part_size=args.part_mb * 1024 * 1024)
            wall = time.perf_counter() - started
            done.set()
            sampler.join()
            assert upload.status == "completed" and upload.file.bytes == size, upload
    mib = 1024 * 1024
    print(f"file {size / mib:.0f} MiB in {args.part_mb} MiB parts: {wall:.1f} s ({size / mib / wall:.0f} MiB/s)")
    print(f"server RSS: {before / mib:.0f} MiB before, {peak[0] / mib:.0f} MiB at peak "
          f"(+{(peak[0] - before) / mib:.0f} MiB for a {size / mib:.0f} MiB file)")


if __name__ == "__main__":
    main()
