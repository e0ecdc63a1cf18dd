"""The FastAPI application: OpenAI's Files, Fine-tuning, Models and Chat Completions APIs under ``/v1``.

``create_app(settings)`` builds it; ``tunewise serve`` runs it with uvicorn beside a worker process
(``tunewise.serve.worker``) that trains the queued jobs. Both share the SQLite store in ``data_dir``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from tunewise import __version__
from tunewise.serve import errors
from tunewise.serve.deps import PrincipalDep, State, StateDep
from tunewise.serve.errors import ApiError
from tunewise.serve.guard import Guard
from tunewise.serve.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    state = State(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(title="tunewise", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.tunewise = state
    errors.install(app)

    # Outermost of the app's own layers: request ids, the key before the body, bodies bounded as they stream.
    app.add_middleware(Guard, state=state)

    @app.get("/health")
    async def health(state: StateDep) -> dict[str, Any]:
        # On the event loop, not in the thread pool: a health check must not queue behind busy request threads
        # (one SELECT on the loop's own connection takes microseconds; WAL readers never wait for the writer).
        state.store.one("SELECT 1 AS ok")
        return {"status": "ok", "version": __version__}

    from tunewise.serve.routes import chat, files, graders, jobs, models, permissions, stored, uploads

    for module in (files, uploads, jobs, permissions, models, chat, graders, stored):
        app.include_router(module.router, prefix="/v1")
    from tunewise.serve.routes.completions import router as completions  # legacy prompt/completion models

    app.include_router(completions, prefix="/v1")
    from tunewise.dashboard import mount  # the web page at / and its read-only /v1/dashboard endpoints

    mount(app)
    return app


__all__ = ["ApiError", "PrincipalDep", "State", "StateDep", "create_app"]
