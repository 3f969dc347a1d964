"""/agents: stored agent definitions, shown with whether they can run now."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.api import webhooks
from server.api.request import decode_body, json_response, page_params, runner, store, tenant_of
from server.errors import Forbidden, InvalidRequest, NotFound
from server.ids import new_ulid, now
from server.models import (
    DEFAULT_TENANT,
    Agent,
    AgentView,
    Page,
    ToolRef,
    compact_at_of,
    context_window_of,
)
from server.runs.agentspec import check, unusable_reason
from server.store import DEFAULT_AGENT_ID

Name = Annotated[str, Meta(min_length=1, max_length=100)]
MaxSteps = Annotated[int, Meta(ge=1, le=1000)]
MaxTokens = Annotated[int, Meta(ge=1, le=1_000_000)]
Temperature = Annotated[float, Meta(ge=0, le=2)]
RunSeconds = Annotated[float, Meta(gt=0)]
Tokens = Annotated[int, Meta(ge=1000, le=100_000_000)]


class CreateAgent(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    provider: str
    model: str | None = None
    system: str | None = None
    tools: list[ToolRef] | None = None
    max_steps: MaxSteps = 16
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    options: dict[str, Any] = {}
    max_run_seconds: RunSeconds | None = None
    context_window: Tokens | None = None
    compact_at: Tokens | None = None
    summary_agent: str | None = None
    webhook_url: str | None = None


class UpdateAgent(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | UnsetType = UNSET
    provider: str | UnsetType = UNSET
    model: str | UnsetType | None = UNSET
    system: str | UnsetType | None = UNSET
    tools: list[ToolRef] | UnsetType | None = UNSET
    max_steps: MaxSteps | UnsetType = UNSET
    max_tokens: MaxTokens | UnsetType | None = UNSET
    temperature: Temperature | UnsetType | None = UNSET
    options: dict[str, Any] | UnsetType = UNSET
    max_run_seconds: RunSeconds | UnsetType | None = UNSET
    context_window: Tokens | UnsetType | None = UNSET
    compact_at: Tokens | UnsetType | None = UNSET
    summary_agent: str | UnsetType | None = UNSET
    webhook_url: str | UnsetType | None = UNSET


class AgentWithSecret(AgentView):
    """The answer of the request that set a new `webhook_url`: its secret, shown this once."""

    webhook_secret: str | None = None


create_decoder = msgspec.json.Decoder(CreateAgent)
update_decoder = msgspec.json.Decoder(UpdateAgent)


def view(request: Request, agent: Agent, secret: str | None = None) -> AgentView:
    reason = unusable_reason(agent, runner(request).provider_ctx)
    fields = msgspec.structs.asdict(agent)
    fields["context_window"], fields["compact_at"] = context_window_of(agent), compact_at_of(agent)
    if secret is not None:
        return AgentWithSecret(
            **fields, usable=reason is None, unusable_reason=reason, webhook_secret=secret
        )
    return AgentView(**fields, usable=reason is None, unusable_reason=reason)


async def check_budget(request: Request, agent: Agent, tenant: str) -> None:
    """compact_at under the context window; a summary agent the tenant has."""
    if compact_at_of(agent) >= context_window_of(agent):
        raise InvalidRequest(
            f"compact_at ({compact_at_of(agent)}) must be below context_window "
            f"({context_window_of(agent)})",
            field="compact_at",
        )
    if agent.summary_agent is not None:
        try:
            await store(request).agents.get(agent.summary_agent, tenant)
        except NotFound as exc:
            raise InvalidRequest(
                f"summary_agent {agent.summary_agent!r} is not an agent", field="summary_agent"
            ) from exc


def checked(request: Request, agent: Agent) -> Agent:
    active = runner(request)
    return check(agent, active.provider_ctx, active.settings.tools)


async def create_agent(request: Request) -> Response:
    body = await decode_body(request, create_decoder)
    stamp = now()
    agent = Agent(
        id=new_ulid(),
        name=body.name,
        provider=body.provider,
        model=body.model,
        system=body.system,
        tools=body.tools or [],
        max_steps=body.max_steps,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        options=body.options,
        created_at=stamp,
        updated_at=stamp,
        max_run_seconds=body.max_run_seconds,
        context_window=body.context_window,
        compact_at=body.compact_at,
        summary_agent=body.summary_agent,
        webhook_url=body.webhook_url,
    )
    tenant = tenant_of(request)
    await check_budget(request, agent, tenant)
    hook = await webhooks.endpoint(request, body.webhook_url, None)
    created = await store(request).agents.create(checked(request, agent), tenant, hook.sealed)
    return json_response(view(request, created, hook.shown), 201)


async def list_agents(request: Request) -> Response:
    limit, cursor = page_params(request)
    page = await store(request).agents.page(tenant_of(request), limit, cursor)
    return json_response(Page([view(request, a) for a in page.data], page.next_cursor))


async def get_agent(request: Request) -> Response:
    agent = await store(request).agents.get(request.path_params["agent_id"], tenant_of(request))
    return json_response(view(request, agent))


async def update_agent(request: Request) -> Response:
    body = await decode_body(request, update_decoder)
    agents = store(request).agents
    tenant = tenant_of(request)
    agent = await agents.get(request.path_params["agent_id"], tenant)
    if agent.id == DEFAULT_AGENT_ID and tenant != DEFAULT_TENANT:
        raise Forbidden(
            "the built-in default agent is shared by every tenant: only keys of the default "
            "tenant may change it; create an agent of your own instead"
        )
    changes = {f: v for f in body.__struct_fields__ if (v := getattr(body, f)) is not UNSET}
    if changes.get("tools", UNSET) is None:
        changes["tools"] = []
    if "max_steps" in changes and changes["max_steps"] is None:
        raise InvalidRequest("max_steps cannot be null", field="max_steps")
    if {"provider", "model"} & set(changes) and "context_window" not in changes:
        changes["context_window"] = None  # the new model's default, unless given
    if "context_window" in changes and "compact_at" not in changes:
        changes["compact_at"] = None  # 0.8 of the new window
    updated = msgspec.structs.replace(agent, **changes, updated_at=now())
    await check_budget(request, updated, tenant)
    hook = await webhooks.endpoint(request, updated.webhook_url, agent.webhook_url)
    replaced = await agents.replace(checked(request, updated), tenant, hook.sealed)
    return json_response(view(request, replaced, hook.shown))


async def delete_agent(request: Request) -> Response:
    await store(request).agents.delete(request.path_params["agent_id"], tenant_of(request))
    return Response(status_code=204)


routes = [
    Route("/agents", create_agent, methods=["POST"]),
    Route("/agents", list_agents, methods=["GET"]),
    Route("/agents/{agent_id}", get_agent, methods=["GET"]),
    Route("/agents/{agent_id}", update_agent, methods=["PUT"]),
    Route("/agents/{agent_id}", delete_agent, methods=["DELETE"]),
]
