"""The dashboard's static side, without a browser (tests/browser drives it in Chromium):
``/`` leads to ``/ui/``; ``/ui/`` serves the page and every file it and its modules load,
with the content types browsers demand; nothing is fetched from outside; the vendored
uPlot is the pinned release; the page is open while the API behind it needs a key."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from redis import Redis

from trainyard_api.app import create_app
from trainyard_api.config import Settings
from trainyard_api.routes.ui import UI_DIR

REPO = Path(__file__).resolve().parents[2]
VENDOR = UI_DIR / "vendor" / "uplot"
KEY = "ui-test-key-0123456789abcdef"

# index.html's src= and href= values; hash routes, data: URIs and the API docs link aside.
_REF = re.compile(r"""\b(?:src|href)="([^"]+)\"""")
# Static imports and re-exports: `import x from "./a.js"`, `import "./b.js"`, `export ... from`.
_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^"';]*?["'](\.{1,2}/[^"']+)["']""", re.M)
_DYNAMIC_IMPORT = re.compile(r"""\bimport\(\s*["']([^"']+)["']\s*\)""")
_URL = re.compile(r"https?://", re.I)


def _own_modules() -> list[Path]:
    return sorted(p for p in UI_DIR.rglob("*.js") if VENDOR not in p.parents)


def _index_refs() -> list[str]:
    html = (UI_DIR / "index.html").read_text()
    return [r for r in _REF.findall(html) if not r.startswith(("#", "data:", "../docs"))]


def _without_comments(text: str) -> str:
    """The text with /* */, <!-- --> and // line comments removed (a `//` inside a URL
    follows a colon, so it is not taken for a comment and stays to be found)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return re.sub(r"(^|[\s;{}()])//.*$", r"\1", text, flags=re.M)


@pytest.fixture
def keyed(settings: Settings, redis_client: Redis) -> Iterator[TestClient]:
    keyed_settings = settings.model_copy(update={"api_keys": [SecretStr(KEY)]})
    with TestClient(create_app(keyed_settings)) as c:
        yield c


def test_root_redirects_to_the_dashboard(client: TestClient) -> None:
    for path in ("/", "/ui"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 307, path
        assert r.headers["location"] == "/ui/"


def test_the_page_is_served_with_its_content_type_and_a_strict_policy(client: TestClient) -> None:
    r = client.get("/ui/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<main data-page="loading">' in r.text
    for nav in ("jobs", "compare", "workers", "queues", "models", "submit"):
        assert f'data-nav="{nav}" href="#/{nav}"' in r.text
    policy = r.headers["content-security-policy"]
    assert "default-src 'self'" in policy  # a browser refuses anything from elsewhere
    assert "script-src" not in policy  # so scripts fall back to 'self': no inline script


def test_every_file_the_page_and_its_modules_load_is_served(client: TestClient) -> None:
    wanted: set[str] = set(_index_refs())
    assert {"app.js", "style.css", "vendor/uplot/uPlot.iife.min.js"} <= wanted
    for module in _own_modules():
        text = module.read_text()
        for spec in _IMPORT.findall(text) + _DYNAMIC_IMPORT.findall(text):
            assert spec.startswith("."), f"{module.name} imports a bare or absolute {spec!r}"
            target = (PurePosixPath(module.relative_to(UI_DIR).as_posix()).parent / spec).as_posix()
            resolved = (UI_DIR / target).resolve()
            assert resolved.is_file(), f"{module.name} imports {spec}, which does not exist"
            wanted.add(resolved.relative_to(UI_DIR).as_posix())
    assert len([w for w in wanted if w.startswith("pages/")]) == 7  # one module per page
    types = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
    for name in sorted(wanted):
        r = client.get(f"/ui/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith(types[Path(name).suffix]), name
        assert r.headers["cache-control"] == "no-cache"  # a new release shows on reload


def test_missing_files_and_paths_outside_the_folder_are_not_found(client: TestClient) -> None:
    assert client.get("/ui/nope.js").status_code == 404
    assert client.get("/ui/%2e%2e/routes/ui.py").status_code == 404


def test_no_shipped_file_fetches_anything_from_outside() -> None:
    checked = 0
    for path in UI_DIR.rglob("*"):
        if not path.is_file() or path.name in {"LICENSE", "SHA256SUMS", "VERSION"}:
            continue
        code = _without_comments(path.read_text())
        assert not _URL.search(code), f"{path.relative_to(UI_DIR)} names an outside URL"
        assert "@import" not in code and "url(" not in code.replace("url(data:", ""), path.name
        checked += 1
    assert checked >= 12


def test_the_code_builds_the_page_from_text_and_streams_with_fetch() -> None:
    for module in _own_modules():
        text = _without_comments(module.read_text())
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert banned not in text, f"{module.name} uses {banned}"
        # EventSource cannot send the API key: streams are read with fetch().
        assert "new EventSource" not in text, module.name
        assert len(module.read_text().splitlines()) <= 500, f"{module.name} is over 500 lines"
    api = (UI_DIR / "api.js").read_text()
    assert "sessionStorage" in api and "Authorization: `Bearer ${key}`" in api
    assert "localStorage" not in api  # the key does not outlive the tab


def test_vendored_uplot_is_the_pinned_release() -> None:
    version = (VENDOR / "VERSION").read_text().strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    script = (REPO / "scripts" / "vendor_ui.sh").read_text()
    assert f'UPLOT_VERSION="${{UPLOT_VERSION:-{version}}}"' in script
    bundle = (VENDOR / "uPlot.iife.min.js").read_text()
    assert f"(v{version})" in bundle.splitlines()[0]
    license_text = (VENDOR / "LICENSE").read_text()
    assert "MIT License" in license_text and "Leon Sorokin" in license_text
    sums = (VENDOR / "SHA256SUMS").read_text().split("\n")
    listed = {}
    for line in filter(None, sums):
        digest, name = line.split()
        listed[name] = digest
    assert set(listed) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    for name, digest in listed.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_the_dashboard_is_open_while_the_api_needs_a_key(keyed: TestClient) -> None:
    assert keyed.get("/", follow_redirects=False).status_code == 307
    for path in ("/ui/", "/ui/app.js", "/ui/pages/jobs.js", "/ui/vendor/uplot/uPlot.min.css"):
        assert keyed.get(path).status_code == 200, path
    assert keyed.get("/jobs").status_code == 401
    assert keyed.get("/events").status_code == 401
    assert keyed.get("/ui/nope").status_code == 404  # open, but nothing else there
    auth = {"Authorization": f"Bearer {KEY}"}
    assert keyed.get("/jobs", headers=auth).status_code == 200


def test_a_ui_prefixed_path_cannot_reach_the_api_without_a_key(keyed: TestClient) -> None:
    """A raw `/ui/../jobs` (no client normalises it here) is the static files' business:
    it never routes to /jobs, so the open prefix opens nothing else."""
    messages: list[dict[str, Any]] = []

    async def call() -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/ui/../jobs", "raw_path": b"/ui/../jobs",
            "query_string": b"", "root_path": "", "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 1), "server": ("testserver", 80),
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        await keyed.app(scope, receive, send)  # type: ignore[arg-type]

    asyncio.run(call())
    assert messages[0]["status"] == 404
    body = b"".join(m.get("body", b"") for m in messages[1:])
    assert b'"jobs"' not in body


def test_the_schema_leaves_the_dashboard_out(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]
