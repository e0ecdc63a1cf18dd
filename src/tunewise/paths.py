"""Where tunewise keeps things on disk.

Everything lives under one home directory: ``$TUNEWISE_HOME``, else ``~/.cache/tunewise``.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The tunewise home directory (created on first use)."""
    root = Path(os.environ.get("TUNEWISE_HOME") or Path.home() / ".cache" / "tunewise").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    """Cache of converted models (one HF model directory per registry entry)."""
    path = home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
