"""GET /sessions/search?q=…: sessions whose messages match, best first, with snippets.

Its route comes before /sessions/{session_id} in the table so that "search" is not taken for
a session key. Archived sessions are searched too: search is how old work is found again.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api.request import json_response, page_params, store, tenant_of
from server.errors import InvalidRequest

MAX_QUERY = 1000


async def search_sessions(request: Request) -> Response:
    q = request.query_params.get("q", "").strip()
    if not q:
        raise InvalidRequest("q must hold at least one word to search for", field="q")
    if len(q) > MAX_QUERY:
        raise InvalidRequest(f"q must be at most {MAX_QUERY} characters", field="q")
    limit, cursor = page_params(request)
    return json_response(await store(request).search.page(tenant_of(request), q, limit, cursor))


routes = [
    Route("/sessions/search", search_sessions, methods=["GET"]),
]
