"""The small HTTP client of the `sessiond sessions` commands: plain JSON and bytes (exports,
imports), every failure -- the server unreachable, or an error answer -- a ClientError
carrying a message fit to print. The chat uses the SDK (server.client) instead."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:2323"


class ClientError(Exception):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field  # the error's `field`, when the server named one


def default_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("SESSIOND_URL") or DEFAULT_URL


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=default_url(),
        help="the server (default: $SESSIOND_URL or http://127.0.0.1:2323)",
    )


def error_field(response: httpx.Response) -> str | None:
    try:
        field = response.json()["error"].get("field")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return field if isinstance(field, str) else None


def error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['message']} ({error['type']}, HTTP {response.status_code})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"


class Client:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        # a run's stream may be quiet between pings for up to the server's ping interval
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s, read=300))

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach sessiond at {self.url}: {exc}") from exc
        if response.is_error:
            raise ClientError(error_message(response), error_field(response))
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()
