"""The node's web dashboard (docs/operations.md, "Dashboard"): static files from
``httpapi/static`` (package data), served by the HTTP API's own server.

The page is plain HTML and JavaScript with no build step; everything it shows comes from the
public HTTP API (``/gossip``, ``/info``, the ``$all`` and stream feeds, long polls), so the
dashboard needs no endpoint of its own and shows exactly what any HTTP client would see.
The files are read once when the app is built (a few kB) and answered from memory with an
ETag, so a reload costs a ``304``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")
PREFIX = "/dashboard"

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""The page shows event data written by anyone: it is only ever set as text, and the policy
lets the page load and fetch nothing but this node's own files and API."""


def load_files(folder: Path = STATIC) -> dict[str, tuple[bytes, str, str]]:
    """``name -> (body, content type, ETag)`` for every served file of ``folder``."""
    files = {}
    for path in sorted(folder.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if content_type is not None and path.is_file():
            body = path.read_bytes()
            files[path.name] = (body, content_type,
                                '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    if "index.html" not in files:
        raise FileNotFoundError(f"the dashboard's index.html is missing from {folder} (is the "
                                "package data installed?)")
    return files


def add_routes(app: web.Application, base_url) -> None:
    """``GET /dashboard/`` and its files; ``/`` and ``/dashboard`` answer ``307`` to it.
    ``base_url(request)`` gives the scheme, host and prefix a redirect must point at."""
    files = load_files()

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, reason="Temporary Redirect",
                            headers={"Location": f"{base_url(request)}{PREFIX}/"})

    async def serve(request: web.Request) -> web.Response:
        found = files.get(request.match_info.get("name") or "index.html")
        if found is None:
            raise web.HTTPNotFound(text="no such dashboard file\n")
        body, content_type, tag = found
        headers = {"ETag": tag, "Cache-Control": "no-cache", **SECURITY_HEADERS}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, reason="Not Modified", headers=headers)
        return web.Response(body=body, headers={"Content-Type": content_type, **headers})

    app.router.add_get("/", redirect)
    app.router.add_get(PREFIX, redirect)
    app.router.add_get(PREFIX + "/", serve)
    app.router.add_get(PREFIX + "/{name}", serve)
