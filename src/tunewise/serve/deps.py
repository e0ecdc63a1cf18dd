"""What the routes depend on, per request: the shared ``State`` and the caller's ``Principal``.

Routes import these from here; ``tunewise.serve.app`` builds the application from the routes, so neither imports
the other's module at import time in a circle.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from tunewise.serve.auth import Principal, authenticate
from tunewise.serve.settings import Settings
from tunewise.serve.store import Store


class State:
    """What the routes share: settings, the store, and the generation engine (built on first use)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.data_dir)
        self._engine: Any = None
        self._engine_lock = threading.Lock()

    def engine(self) -> Any:
        # One engine per server process: it batches concurrent requests and caches loaded models.
        # Imported late so that starting the server never pays for torch.
        with self._engine_lock:
            if self._engine is None:
                from tunewise.infer import Engine

                self._engine = Engine(max_batch_size=self.settings.engine_max_batch_size,
                                      num_threads=self.settings.engine_threads(),
                                      backend=self.settings.engine_backend,
                                      gguf_quant=self.settings.engine_gguf_quant)
            return self._engine

    def close(self) -> None:
        """Stop the engine's scheduler threads (at server shutdown)."""
        with self._engine_lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
        self.store.close()


def get_state(request: Request) -> State:
    return request.app.state.tunewise


def get_principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    # The guard middleware (tunewise.serve.guard) checked the key under /v1 before the body was read.
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        return principal
    return authenticate(get_state(request).store, authorization)


StateDep = Annotated[State, Depends(get_state)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


__all__ = ["PrincipalDep", "State", "StateDep", "get_principal", "get_state"]
