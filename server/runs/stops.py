"""Why a run stopped, in words a client can show."""

from __future__ import annotations


def stop_message(status: str) -> str:
    if status == "interrupted":
        return "the run was interrupted by the server (shutdown, restart or a newer message)"
    return "the run was cancelled at the client's request"
