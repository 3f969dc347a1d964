"""The scenarios, in the order the suite runs them. Each module has NAME, TITLE, BUDGET_S (the
full run's time limit; smoke runs get SMOKE_BUDGET_S) and `async def run(ctx, result)`."""

from __future__ import annotations

from types import ModuleType

from bench.scenarios import (
    console,
    history,
    idle,
    many,
    messages,
    provider,
    replay,
    responses,
    scale,
    scrape,
    stream,
    turns,
    writes,
)

SCENARIOS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        stream,
        responses,
        messages,
        many,
        turns,
        history,
        writes,
        idle,
        replay,
        provider,
        scrape,
        console,
        scale,
    )
}
SMOKE_BUDGET_S = 20.0
