"""Where a job trains: the one seam between the job worker and the engines that run training.

The worker (``tunewise.serve.worker``) validates jobs, records events and checkpoints and finishes them; an
``Executor`` only runs the training of one job and reports back through the same two callables as the trainer
itself (``on_event`` for each ``TrainEvent``, ``stop`` read between steps):

- ``local`` (``local.py``, the default): the trainer in a thread of the worker process, on this machine;
- ``ray`` (``ray.py``): the trainer on a Ray cluster through Ray Train, ``executor=ray`` (docs/ray.md).

``pick(settings, shutdown)`` returns the one the settings name. Only ``ray.py`` imports Ray, and only when picked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from tunewise.errors import UsageError
from tunewise.serve.settings import Settings

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    name: str

    def wait_until_runnable(self, job: dict[str, Any], still_queued: Callable[[], bool],
                            add_event: Callable[..., None]) -> bool:
        """Block while the job cannot start (the resources it asks for are not free); True once it can, False when
        ``still_queued`` turns false first (cancelled, paused, shutting down). ``add_event(message, level=...)``
        records on the job what it waits for."""

    def run(self, job: dict[str, Any], config: Any, on_event: Callable[[Any], None],
            stop: Callable[[], bool]) -> Any:
        """Train ``config`` (a ``TrainConfig``) for ``job`` and return the ``TrainResult``. ``stop`` true: raise
        ``Cancelled`` once the job's state is saved (a resumed run continues from it). Errors are
        ``TunewiseError``s."""

    def close(self) -> None:
        """Let go of what the executor holds (a cluster connection); running jobs are not stopped by it."""


def check(settings: Settings) -> None:
    """Raise ``UsageError`` for executor settings that cannot work (before a server or worker starts)."""
    if settings.executor not in EXECUTORS:
        raise UsageError(f"Unknown executor {settings.executor!r}.", param="executor",
                         hint="Use --executor local (the default) or --executor ray (env TUNEWISE_EXECUTOR).")
    if settings.executor == "ray":
        import importlib.util

        from tunewise.serve.executors import resources

        if importlib.util.find_spec("ray") is None:
            raise UsageError("The ray executor needs Ray, which is not installed.", param="executor",
                             hint="pip install 'tunewise[ray]' (on the server and on every node of the cluster).")
        resources.check_settings(settings)


def pick(settings: Settings, shutdown: threading.Event) -> Executor:
    """The executor the settings name (``executor``); ``shutdown`` is set when the worker stops."""
    check(settings)
    if settings.executor == "ray":
        from tunewise.serve.executors.ray import RayExecutor

        return RayExecutor(settings, shutdown)
    from tunewise.serve.executors.local import LocalExecutor

    return LocalExecutor(settings, shutdown)
