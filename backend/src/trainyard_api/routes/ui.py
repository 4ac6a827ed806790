"""The web dashboard: static files under ``/ui/`` (no build step, nothing fetched from
outside at run time), and ``/`` leading there. Not part of the API: left out of the
OpenAPI schema, and open without an API key (see ``auth.py``): the page has to load before
it can ask for a key, and it holds no data of its own; every call it makes for data goes
to the API with the key."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

__all__ = ["UI_DIR", "UI_PREFIX", "install", "router"]

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
UI_PREFIX = "/ui"

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(f"{UI_PREFIX}/", status_code=307)


@router.get(UI_PREFIX)
def ui_no_slash() -> RedirectResponse:
    # Relative asset paths in index.html resolve against /ui/, not /.
    return RedirectResponse(f"{UI_PREFIX}/", status_code=307)


class _UiFiles(StaticFiles):
    """Static files that the browser revalidates (ETag) instead of caching blindly, so a
    new release's modules are picked up on reload; and JavaScript modules served as
    ``text/javascript`` whatever the host's mime table says (browsers refuse modules
    served otherwise)."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        name = str(full_path)
        if name.endswith(".js"):
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        elif name.endswith(".css"):
            response.headers["content-type"] = "text/css; charset=utf-8"
        response.headers["cache-control"] = "no-cache"
        # The dashboard loads only its own files; nothing from elsewhere, no inline script.
        response.headers["content-security-policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
        )
        response.headers["x-content-type-options"] = "nosniff"
        return response


def install(app: FastAPI) -> None:
    """Add the redirects and mount the dashboard's files on ``app``."""
    app.include_router(router)
    app.mount(UI_PREFIX, _UiFiles(directory=UI_DIR, html=True), name="ui")
