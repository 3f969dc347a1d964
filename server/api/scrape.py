"""`GET /metrics`: the server's metrics in the Prometheus text format. With auth on it takes
an admin key (api/auth.py), unless the server was started with `--metrics-public`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.meter import Meter


async def metrics(request: Request) -> Response:
    meter: Meter = request.app.state.meter
    body, content_type = meter.exposition()
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


routes = [Route("/metrics", metrics, methods=["GET"])]
