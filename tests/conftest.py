"""Shared test set-up.

Slow tests (``@pytest.mark.slow``) are skipped unless ``TUNEWISE_SLOW=1`` (``make test-all``), with the reason shown.
Every test session gets its own ``TUNEWISE_HOME`` for jobs and servers, but shares the converted-model
cache so the default model is converted once per machine, not once per test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TUNEWISE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with `make test-all` (TUNEWISE_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository (the guide and OpenAI's OpenAPI spec)."""
    if not (SHARED / "reference").is_dir():
        pytest.skip(f"../shared/reference not found at {SHARED}: reference material is absent")
    return SHARED


@pytest.fixture(scope="session")
def guide_path(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "fine-tuning-guide.txt"


@pytest.fixture(autouse=True, scope="session")
def _tunewise_home(tmp_path_factory):
    """Each test session keeps its state (jobs, files, keys) in a fresh TUNEWISE_HOME."""
    old = os.environ.get("TUNEWISE_HOME")
    os.environ["TUNEWISE_HOME"] = str(tmp_path_factory.mktemp("tunewise-home"))
    yield
    if old is None:
        os.environ.pop("TUNEWISE_HOME", None)
    else:
        os.environ["TUNEWISE_HOME"] = old
