from __future__ import annotations

import pytest

from server import providers
from server.errors import InvalidRequest
from server.models import Agent
from server.providers.anthropic import AnthropicProvider
from server.providers.base import Access, ProviderContext, ProviderSettings
from server.providers.openai import OpenAIProvider


def agent(provider: str, options: dict | None = None) -> Agent:
    return Agent(
        id="agt_1",
        name="a",
        provider=provider,
        model=None,
        system=None,
        tools=[],
        max_steps=5,
        max_tokens=None,
        temperature=None,
        options=options or {},
        created_at="2025-01-01T00:00:00Z",
        updated_at="2025-01-01T00:00:00Z",
    )


KEYS = {"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"}
CTX = ProviderContext(http=None, settings=ProviderSettings(), env=KEYS)
TEAM = ProviderContext(None, ProviderSettings(), KEYS, Access(agent_key_env=["TEAM_*"]))


def test_real_providers_are_registered():
    assert providers.names() == ["anthropic", "echo", "openai", "scripted"]
    assert isinstance(providers.create(agent("anthropic"), CTX), AnthropicProvider)
    assert isinstance(providers.create(agent("openai"), CTX), OpenAIProvider)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"base_url": "http://localhost:11434/v1"},
        {"base_url": "https://gateway.example.com", "api_key_env": "TEAM_KEY"},
        {"api_key_env": "TEAM_KEY", "something_else": 1},
    ],
)
def test_valid_options_pass(provider, options):
    providers.check_agent(provider, options, TEAM)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"base_url": "ftp://example.com"}, "base_url must be an http(s) URL"),
        ({"base_url": "localhost:11434"}, "base_url must be an http(s) URL"),
        ({"base_url": 11434}, "base_url"),
        ({"api_key_env": 5}, "api_key_env"),
        ({"api_key_env": ""}, "api_key_env must not be empty"),
        ({"api_key": "sk-secret"}, "options.api_key_env"),
        ({"base_url": "http://[::1"}, "base_url must be an http(s) URL"),
        ({"base_url": "http://[zz]/"}, "base_url must be an http(s) URL"),
        ({"api_key_env": "HOME"}, "the operator does not let agents read"),
    ],
)
def test_invalid_options_are_rejected(provider, options, needle):
    with pytest.raises(InvalidRequest) as caught:
        providers.check_agent(provider, options, TEAM)
    assert needle in caught.value.message
    assert caught.value.extra == {"field": "options"}
    assert "sk-secret" not in caught.value.message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("echo", None, {})),
        ({"ANTHROPIC_API_KEY": ""}, ("echo", None, {})),
        ({"ANTHROPIC_API_KEY": "k"}, ("anthropic", "claude-sonnet-4-5", {})),
        ({"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"}, ("anthropic", "claude-sonnet-4-5", {})),
        ({"OPENAI_API_KEY": "k"}, ("openai", "gpt-4o-mini", {})),
        (
            {"OPENAI_BASE_URL": "http://localhost:11434/v1"},
            ("openai", "gpt-4o-mini", {"base_url": "http://localhost:11434/v1"}),
        ),
    ],
)
def test_choose_default(env, expected):
    assert providers.choose_default(env) == expected


def test_the_default_model_setting_names_a_real_providers_model_only():
    from server.app import default_agent

    assert default_agent({}, "llama3.2").model is None  # echo has no models
    assert default_agent({"OPENAI_API_KEY": "k"}, "llama3.2").model == "llama3.2"
    assert default_agent({"OPENAI_API_KEY": "k"}, None).model == "gpt-4o-mini"
