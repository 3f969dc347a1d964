"""Compacting a session: read what its input is built from, plan the cut, have the agent's
provider (or its `summary_agent`'s) write the summary, store the entry, and put the new
history in the session's place in `Histories`. Used before a run's step (from the loop's
`compact` hook) and on demand (POST /sessions/{id}/compact)."""

from __future__ import annotations

import logging

import msgspec

from server import compaction, providers
from server.errors import NotFound
from server.ids import new_ulid, now
from server.models import (
    Agent,
    CompactionInfo,
    Message,
    TextBlock,
    compact_at_of,
    estimate_tokens,
)
from server.providers.base import ProviderContext
from server.runs.histories import Histories
from server.session import History
from server.store import Store

log = logging.getLogger("sessiond.compaction")


class Compacted(msgspec.Struct):
    entry: Message
    history: History


class Compactor:
    def __init__(self, store: Store, histories: Histories, provider_ctx: ProviderContext) -> None:
        self.store = store
        self.histories = histories
        self.provider_ctx = provider_ctx

    async def compact(
        self,
        session_id: str,
        agent: Agent,
        fixed: int,
        run_id: str | None = None,
        keep: int | None = None,
        held: bool = True,
    ) -> Compacted | None:
        """Compact the session (it must be idle or held by the caller's run); None when
        there is nothing to summarise. `fixed`: the tokens of the system prompt and tools;
        `keep`: of recent turns to keep, at most (None: half of compact_at). `held`: the
        caller's run holds the session, so nothing was stored meanwhile and the new history
        can be kept as it is; else (on demand) the kept one is dropped, and the next run
        reads from the entry on, with whatever a run stored while the summary was written."""
        rows = await self.store.messages.since_compaction(session_id)
        previous = rows[0] if rows and rows[0].role == "compaction" else None
        turns = rows[1:] if previous is not None else rows
        keep = compaction_keep(agent) if keep is None else keep
        found = compaction.plan(previous, turns, fixed, keep)
        if found is None:
            return None
        writer = await self._summariser(agent)
        provider = providers.create(writer, self.provider_ctx)
        earlier = _text(previous) if previous is not None else None
        summary = await compaction.summarise(provider, writer, earlier, found.summarised)
        content: list[TextBlock] = [TextBlock(summary)]
        tokens = estimate_tokens(list(content))
        through = found.summarised[-1].seq if found.summarised else turns[0].seq - 1
        info = CompactionInfo(
            through_seq=through,
            summarised=len(found.summarised),
            tokens_before=found.tokens_before,
            tokens_after=fixed + tokens + found.tokens_kept,
            summary_agent_id=writer.id if writer.id != agent.id else None,
        )
        entry = Message(
            id=new_ulid(),
            session_id=session_id,
            seq=0,  # set as it is stored
            role="compaction",
            content=list(content),
            run_id=run_id,
            created_at=now(),
            tokens=tokens,
            tokens_source="estimate",
            compaction=info,
        )
        stored, count = await self.store.messages.add_compaction(entry)
        history = History.of([stored, *found.kept])
        if held:
            self.histories.replace(session_id, history, count)
        else:
            self.histories.forget(session_id)
        log.info(
            "compacted",
            extra={
                "fields": {
                    "session_id": session_id,
                    "run_id": run_id,
                    "summarised": info.summarised,
                    "tokens_before": info.tokens_before,
                    "tokens_after": info.tokens_after,
                }
            },
        )
        return Compacted(stored, history)

    async def _summariser(self, agent: Agent) -> Agent:
        if agent.summary_agent is None or agent.summary_agent == agent.id:
            return agent
        try:
            return await self.store.agents.get(agent.summary_agent, None)
        except NotFound:
            log.warning(
                "summary agent %s is gone: agent %s summarises for itself",
                agent.summary_agent,
                agent.id,
            )
            return agent


def compaction_keep(agent: Agent) -> int:
    """Tokens of recent turns a compaction keeps, at most: half the budget."""
    return compact_at_of(agent) // 2


def _text(entry: Message) -> str:
    return "".join(b.text for b in entry.content if isinstance(b, TextBlock))
