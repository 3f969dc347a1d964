"""The scenarios, in the order the suite runs them. Each module has NAME, TITLE, BUDGET_S (the
full run's time limit; smoke runs get SMOKE_BUDGET_S) and `async def run(ctx, result)`."""

from __future__ import annotations

from types import ModuleType

from bench.scenarios import (
    history,
    idle,
    many,
    messages,
    provider,
    replay,
    stream,
    turns,
    writes,
)

SCENARIOS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        stream,
        many,
        turns,
        history,
        writes,
        idle,
        replay,
        provider,
        messages,
    )
}
SMOKE_BUDGET_S = 20.0
