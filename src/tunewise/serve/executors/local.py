"""The local executor: the trainer in a thread of the worker process, on this machine (the default)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tunewise.serve.settings import Settings


class LocalExecutor:
    name = "local"

    def __init__(self, settings: Settings, shutdown: threading.Event) -> None:
        self.settings = settings
        self.shutdown = shutdown

    def wait_until_runnable(self, job: dict[str, Any], still_queued: Callable[[], bool],
                            add_event: Callable[..., None]) -> bool:
        return True  # max_concurrent_jobs, enforced by the worker, is the only limit here

    def run(self, job: dict[str, Any], config: Any, on_event: Callable[[Any], None],
            stop: Callable[[], bool]) -> Any:
        from tunewise.train import train

        return train(config, on_event=on_event, stop=stop)

    def close(self) -> None:
        pass
