"""Every setting of `tunewise serve` is in the manual's settings table, with its environment variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunewise.serve.settings import Settings

SERVE_DOC = (Path(__file__).resolve().parents[1] / "docs" / "serve.md").read_text(encoding="utf-8")


def test_every_setting_is_documented():
    missing = [f.name for f in dataclasses.fields(Settings)
               if f"| `{f.name}` | `TUNEWISE_{f.name.upper()}` |" not in SERVE_DOC]
    assert not missing, "settings missing from docs/serve.md's table: " + ", ".join(missing)
