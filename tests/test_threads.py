"""The llama.cpp backend's thread governor: fewer threads while other processes keep the cores busy."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tunewise.infer.threads import ThreadGovernor, _busy_seconds, _cpu_count

pytestmark = pytest.mark.skipif(_busy_seconds() is None, reason="needs Linux's /proc/stat")


def test_a_busy_process_takes_a_thread_away():
    cores = _cpu_count()
    governor = ThreadGovernor(cores, interval=0.3)
    assert governor.enabled == (cores > 1)
    if cores == 1:
        assert governor.threads() == 1
        return
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.4)
        governor.threads()  # starts a reading window while the other process runs
        time.sleep(0.8)
        n = governor.threads()
        assert governor.others >= 0.5, governor.others  # one busy process is about one core
        assert 1 <= n <= cores - 1
    finally:
        busy.kill()
        busy.wait()


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("TUNEWISE_ENGINE_ADAPTIVE_THREADS", "0")
    governor = ThreadGovernor(4, interval=0.0)
    assert not governor.enabled
    assert governor.threads() == 4


def test_one_thread_stays_one():
    governor = ThreadGovernor(1, interval=0.0)
    assert not governor.enabled and governor.threads() == 1
