"""Where the server's provider keys may go, and which variables an agent may read.

Provider credentials belong to the operator, while any client may write an agent's options:
- the server's key for a provider (ANTHROPIC_API_KEY, OPENAI_API_KEY) is sent only to that
  provider's configured endpoints: its public API, its *_BASE_URL environment variable, and
  the base URLs the operator lists (`--provider-base-url NAME=URL`). Any other `base_url`
  gets no server key: an OpenAI-compatible server is then called without one (local servers
  need none), Claude's API not at all;
- `options.api_key_env` may name a variable matching a pattern the operator allows
  (`--agent-key-env PATTERN`, none by default): the agent's own key, sent to whatever
  endpoint it names. The providers' key variables are never such a variable; naming the
  provider's own is allowed only where its key goes anyway.

A definition that breaks the second rule is refused when it is stored (400). Both rules are
applied again whenever a run starts, since the operator's settings may have changed since:
an agent that cannot run is then AgentUnusable (422), and nothing is sent.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from server.errors import AgentUnusable
from server.providers.base import AGENT_KEY_HINT, Access, ProviderContext, Target
from server.providers.http import HttpOptions, is_http_url


@dataclass(frozen=True)
class Endpoint:
    """What the access rules need to know of a provider that speaks HTTP."""

    provider: str
    default_url: str
    key_env: str  # the server's key for it
    base_url_env: str  # its endpoint as the operator sets it in the environment
    keyless: bool  # whether a server other than its public API may be called without a key


ANTHROPIC = Endpoint(
    "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", False
)
OPENAI = Endpoint("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_BASE_URL", True)
ENDPOINTS = {endpoint.provider: endpoint for endpoint in (ANTHROPIC, OPENAI)}
SERVER_KEYS = frozenset(endpoint.key_env for endpoint in ENDPOINTS.values())


def parse_base_urls(entries: list[str]) -> dict[str, list[str]]:
    """The `provider_base_urls` setting ("NAME=URL" strings) by provider; ValueError names
    a bad entry."""
    found: dict[str, list[str]] = {}
    for entry in entries:
        name, sep, url = (part.strip() for part in entry.partition("="))
        if not sep or name not in ENDPOINTS:
            known = ", ".join(sorted(ENDPOINTS))
            raise ValueError(
                f"provider_base_urls: {entry!r} is not NAME=URL with NAME one of {known}"
            )
        if not is_http_url(url):
            raise ValueError(f"provider_base_urls: {entry!r} does not name an http(s) URL")
        found.setdefault(name, []).append(url)
    return found


def root_of(endpoint: Endpoint, options: HttpOptions, env: Mapping[str, str]) -> str:
    """options.base_url, else the SDKs' environment variable, else the public API."""
    return (options.base_url or env.get(endpoint.base_url_env) or endpoint.default_url).rstrip("/")


def configured(endpoint: Endpoint, root: str, env: Mapping[str, str], access: Access) -> bool:
    """Whether `root` is one of the operator's endpoints for the provider."""
    ours = [
        endpoint.default_url,
        env.get(endpoint.base_url_env),
        *access.base_urls.get(endpoint.provider, []),
    ]
    wanted = _normal(root)
    return wanted is not None and any(_normal(url) == wanted for url in ours if url)


def _normal(url: str) -> tuple[object, ...] | None:
    """A URL as compared: case of scheme and host, default ports and a trailing slash do not
    matter; everything else (user info, path, query, fragment) must be the same."""
    try:
        parsed = httpx.URL(url.rstrip("/"))
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return None
    path = parsed.raw_path.rstrip(b"/")
    return (parsed.scheme, parsed.userinfo, parsed.host, parsed.port, path, parsed.fragment)


def agent_may_name(name: str, access: Access) -> bool:
    return name not in SERVER_KEYS and any(
        fnmatch.fnmatchcase(name, pattern) for pattern in access.agent_key_env
    )


def key_env_problem(endpoint: Endpoint, options: HttpOptions, ctx: ProviderContext) -> str | None:
    """Why `options.api_key_env` may not be read for this agent (None: it may)."""
    named = options.api_key_env
    if named is None:
        return None
    name = endpoint.provider
    if named == endpoint.key_env:
        root = root_of(endpoint, options, ctx.env)
        if configured(endpoint, root, ctx.env, ctx.access):
            return None
        return (
            f"options.api_key_env names {named}, the server's key for {name}, which goes only "
            f"to the endpoints the operator configured for {name} (its public API, "
            f"{endpoint.base_url_env}, --provider-base-url {name}=URL); {root} is not one"
        )
    if named in SERVER_KEYS:
        return f"options.api_key_env names {named}, a key of the server's for another provider"
    if agent_may_name(named, ctx.access):
        return None
    allowed = ", ".join(ctx.access.agent_key_env) or "none"
    return (
        f"options.api_key_env names {named}, which the operator does not let agents read "
        f"(allowed patterns: {allowed}; the operator adds them with --agent-key-env)"
    )


def target(endpoint: Endpoint, options: HttpOptions, ctx: ProviderContext) -> Target:
    """Where the agent's calls go and with which key; AgentUnusable when they cannot be made."""
    problem = key_env_problem(endpoint, options, ctx)
    if problem is not None:
        raise AgentUnusable(problem)
    root = root_of(endpoint, options, ctx.env)
    key_env = options.api_key_env
    if key_env is None and configured(endpoint, root, ctx.env, ctx.access):
        key_env = endpoint.key_env
    key = (ctx.env.get(key_env) or None) if key_env is not None else None
    public = _normal(root) == _normal(endpoint.default_url)
    if key is None and (public or not endpoint.keyless or options.api_key_env is not None):
        raise AgentUnusable(_no_key(endpoint, root, key_env))
    return Target(root, key_env, key)


def _no_key(endpoint: Endpoint, root: str, key_env: str | None) -> str:
    name = endpoint.provider
    if key_env is not None:
        also = " (or options.base_url for a server that needs none)" if endpoint.keyless else ""
        return f"no API key for provider {name}: set {key_env}{also}"
    return (
        f"no API key for provider {name} at {root}: the server's {endpoint.key_env} goes only "
        f"to the endpoints the operator configured for {name} (the operator adds one with "
        f"--provider-base-url {name}=URL), and the agent names no key of its own in "
        f"{AGENT_KEY_HINT}"
    )
