"""Where tunewise keeps things on disk.

Everything lives under one home directory: ``$TUNEWISE_HOME``, else ``~/.cache/tunewise``. The local server
saves its URL and key in ``credentials.json`` there; the client commands and the evaluation read them back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunewise.errors import UsageError

CREDENTIALS_FILE = "credentials.json"


def home() -> Path:
    """The tunewise home directory (created on first use)."""
    root = Path(os.environ.get("TUNEWISE_HOME") or Path.home() / ".cache" / "tunewise").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def credentials_file() -> Path:
    """``$TUNEWISE_HOME/credentials.json``: ``{"base_url", "api_key"}`` of the local server (mode 0600)."""
    return home() / CREDENTIALS_FILE


def read_credentials() -> dict | None:
    """The local server's saved ``{"base_url", "api_key"}``, None when there is none; a damaged file is an error."""
    path = credentials_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is unreadable ({exc}).",
                         hint="Delete it and start `tunewise serve` again, or set OPENAI_BASE_URL and "
                              "OPENAI_API_KEY.") from None
    if not isinstance(data, dict) or not data.get("base_url") or not data.get("api_key"):
        raise UsageError(f"{path} lacks base_url or api_key.",
                         hint="Start `tunewise serve` again to rewrite it, or set OPENAI_BASE_URL and "
                              "OPENAI_API_KEY.")
    return data
