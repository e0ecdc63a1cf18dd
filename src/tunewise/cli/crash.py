"""What the CLI (and the demo) do with an exception nobody expected: one line, the traceback in a log file.

A user's mistake is a ``TunewiseError`` and never reaches here. Anything else is a fault of tunewise or of a
library under it: the user gets one line that says what failed and where the full report is, and the
traceback itself only with ``--debug`` or ``TUNEWISE_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

EXIT_INTERNAL = 3
"""Exit code of an internal error: distinct from 1 (the command ran and found a problem) and 2 (bad usage)."""


def debug_enabled() -> bool:
    return os.environ.get("TUNEWISE_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def write_crash_log(exc: BaseException, what: str) -> Path | None:
    """Write the traceback, the command line and the versions to ``$TUNEWISE_HOME/logs/``; None if it can't."""
    from tunewise import __version__, paths

    try:
        logs = paths.home() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        text = (f"{what} failed with an internal error\n"
                f"command: {' '.join(sys.argv)}\ncwd: {os.getcwd()}\n"
                f"tunewise {__version__}, Python {sys.version.split()[0]}\n\n"
                + "".join(traceback.format_exception(exc)))
        path.write_text(text, encoding="utf-8")
        return path
    except OSError:
        return None


def crash_message(exc: BaseException, what: str) -> str:
    """The one line a user sees: what failed, the exception in short, and where the log is."""
    detail = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if len(detail) > 300:
        detail = detail[:297] + "..."
    log = write_crash_log(exc, what)
    where = f" The full report is in {log}" if log else ""
    return (f"error: internal error in {what} ({detail}).{where} "
            "Run again with --debug (or TUNEWISE_DEBUG=1) to see the traceback, and report it.")
