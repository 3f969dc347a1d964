"""The browser's files, shipped inside the package (`server/web/`) and served from memory.

`GET /sdk.js` is the browser SDK (an ES module for any page), `GET /` the web console's page
and `GET /console/{name}` its modules and stylesheet. Each file
is read and hashed once, at first use; its SHA-256 is the `ETag`, so a browser revalidates
with `If-None-Match` and gets a bodiless `304` until the package changes. The page carries a
Content-Security-Policy that lets it load and call nothing but its own origin, so text from a
session (which the console only ever sets as text, never as markup) cannot become script.
These routes need no API key (a `<script type="module">` cannot send one): the files hold
nothing of any tenant, and the console asks for a key before it calls the API.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import NotFound

PACKAGE = "server"  # the files lie in its folder web/, which is no module
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONSOLE_PREFIX = "/console/"


class Asset:
    def __init__(self, body: bytes, media_type: str) -> None:
        self.body = body
        self.media_type = media_type
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


_assets: dict[str, Asset | None] = {}


def asset(name: str) -> Asset | None:
    """The packaged file `name` (a plain file name, or `console/<file>`), or None."""
    if name in _assets:
        return _assets[name]
    found: Asset | None = None
    parts = name.split("/")
    suffix = "." + name.rsplit(".", 1)[-1] if "." in parts[-1] else ""
    if suffix in TYPES and all(p and not p.startswith(".") for p in parts):
        node = resources.files(PACKAGE).joinpath("web", *parts)
        if node.is_file():
            found = Asset(node.read_bytes(), TYPES[suffix])
    _assets[name] = found
    return found


def served(request: Request, name: str, cache: str = "no-cache") -> Response:
    found = asset(name)
    if found is None:
        raise NotFound(f"no file {request.url.path!r} here")
    headers = {
        "ETag": found.etag,
        "Cache-Control": cache,  # keep it, but ask (a 304) before each use
        "X-Content-Type-Options": "nosniff",
    }
    if found.media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = POLICY
        headers["Referrer-Policy"] = "no-referrer"
    if found.etag in _tags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(found.body, 200, headers, found.media_type)


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


async def sdk_js(request: Request) -> Response:
    return served(request, "sdk.js", "public, no-cache")


async def console_page(request: Request) -> Response:
    return served(request, "console/index.html")


async def console_file(request: Request) -> Response:
    return served(request, "console/" + request.path_params["name"])


def is_open(path: str) -> bool:
    """A path of the console's files, which need no key."""
    return path in ("/", "/sdk.js") or path.startswith(CONSOLE_PREFIX)


routes = [
    Route("/sdk.js", sdk_js, methods=["GET"]),
    Route("/", console_page, methods=["GET"]),
    Route("/console/{name}", console_file, methods=["GET"]),
]
