"""sessiond's Python SDK over HTTP: `Client` (blocking) and `AsyncClient`, with typed results
(the server's own Structs) and errors (the server's own exception tree).

    with Client("http://127.0.0.1:2323") as client:
        session = client.sessions.create(name="demo", if_exists="resume")
        print(client.send(session.id, "hello").response)

`server.client.local.LocalClient` is the same interface in-process, on a database file. This
package imports no part of the server's engine, so importing it loads no store or runner.
"""

from server.client.aio import AsyncClient
from server.client.errors import Unreachable
from server.client.sync import Client
from server.errors import (
    AgentUnusable,
    ApiError,
    Archived,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    ProviderError,
    RateLimited,
    SessionBusy,
    Unauthorized,
    Unavailable,
    Unprocessable,
)

__all__ = [
    "AgentUnusable",
    "ApiError",
    "Archived",
    "AsyncClient",
    "Client",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "ProviderError",
    "RateLimited",
    "SessionBusy",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "Unreachable",
]
