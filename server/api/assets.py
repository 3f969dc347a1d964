"""GET /sdk.js: the browser SDK (server/web/sdk.js), a file of the package. Served without a
key (a page's `<script type="module">` cannot send one; the module holds nothing secret),
with an ETag, so that a browser asks again cheaply and is answered 304 while it is the same."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MEDIA_TYPE = "text/javascript; charset=utf-8"
CACHE_CONTROL = "public, max-age=3600"


@functools.cache
def sdk_source() -> tuple[bytes, str]:
    """The module's bytes and their ETag (they change only with the installed package)."""
    data = resources.files("server").joinpath("web", "sdk.js").read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


async def sdk_js(request: Request) -> Response:
    data, etag = sdk_source()
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(data, 200, headers, media_type=MEDIA_TYPE)


routes = [Route("/sdk.js", sdk_js, methods=["GET"])]
