"""The web dashboard that ``tunewise serve`` shows at ``/``.

A static single page (``static/``: HTML, JavaScript modules, CSS; no build step, nothing fetched from a network)
that asks for an API key once, keeps it in the tab's ``sessionStorage`` and reads everything through ``/v1``
with it, plus the read-only ``/v1/dashboard/...`` endpoints of :mod:`tunewise.dashboard.api`. The page and its
assets carry no data, so they need no key; every data call does.

``mount(app)`` adds it to a FastAPI app (the server's ``create_app`` calls it).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# The page loads only its own files: no CDN, no inline script. Report HTML is shown in a sandboxed iframe
# (srcdoc) that inherits this policy, hence data: images and inline styles.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; frame-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")

# Assets change with the package; revalidating each time costs a 304 on 127.0.0.1 and never shows a stale page.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


class _Assets(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def mount(app: FastAPI) -> None:
    """Serve the page at ``/``, its assets under ``/dashboard/`` and the ``/v1/dashboard`` endpoints."""
    from tunewise.dashboard.api import router

    app.include_router(router)
    app.mount("/dashboard", _Assets(directory=STATIC), name="dashboard")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={**HEADERS, "Content-Security-Policy": CSP})


__all__ = ["STATIC", "mount"]
