-- sessiond's database schema: the one source of it.
--
-- The file is a list of numbered steps. At start-up the server applies, in order and each in
-- its own transaction, every step whose number is above the database's PRAGMA user_version,
-- then sets user_version to that number. A step, once released, is never edited: a change to
-- the schema is a new step at the end.
--
-- Timestamps are RFC 3339 UTC strings with milliseconds; ids are ULIDs; JSON columns hold
-- msgspec-encoded JSON.

-- step 1: agents, sessions, messages, runs, events
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    provider    TEXT NOT NULL,
    model       TEXT,
    system      TEXT,
    tools       TEXT NOT NULL DEFAULT '[]',
    max_steps   INTEGER NOT NULL DEFAULT 16 CHECK (max_steps >= 1),
    max_tokens  INTEGER,
    temperature REAL,
    options     TEXT NOT NULL DEFAULT '{}',
    -- 1 while the server manages this agent (the built-in default follows the API keys it
    -- finds at start-up); a PUT hands it to the user.
    auto        INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE sessions (
    id                     TEXT PRIMARY KEY,
    name                   TEXT UNIQUE,
    agent_id               TEXT NOT NULL REFERENCES agents (id),
    work_dir               TEXT,
    title                  TEXT,
    tags                   TEXT NOT NULL DEFAULT '[]',
    metadata               TEXT NOT NULL DEFAULT '{}',
    status                 TEXT NOT NULL DEFAULT 'idle'
                           CHECK (status IN ('idle', 'running', 'requires_action', 'failed')),
    last_seq               INTEGER NOT NULL DEFAULT 0,
    message_count          INTEGER NOT NULL DEFAULT 0,
    turn_count             INTEGER NOT NULL DEFAULT 0,
    input_tokens           INTEGER NOT NULL DEFAULT 0,
    output_tokens          INTEGER NOT NULL DEFAULT 0,
    parent_id              TEXT,
    forked_from_message_id TEXT,
    ttl_seconds            INTEGER,
    expires_at             TEXT,
    archived_at            TEXT,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE INDEX sessions_by_updated ON sessions (updated_at DESC, id DESC);
CREATE INDEX sessions_by_created ON sessions (created_at DESC, id DESC);
CREATE INDEX sessions_by_agent ON sessions (agent_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL;

-- One row per message, append-only; seq counts from 1 within its session.
CREATE TABLE messages (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content    TEXT NOT NULL,
    run_id     TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (session_id, seq)
);
CREATE INDEX messages_by_run ON messages (run_id);

-- One row per message call. `input` keeps the request's content blocks until the run starts
-- (a queued run's message enters the history only when its turn comes).
CREATE TABLE runs (
    id                 TEXT PRIMARY KEY,
    session_id         TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    agent_id           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('queued', 'running', 'requires_action',
                           'completed', 'failed', 'cancelled', 'interrupted')),
    input              TEXT NOT NULL,
    options            TEXT NOT NULL DEFAULT '{}',
    steps              INTEGER NOT NULL DEFAULT 0,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    stop_reason        TEXT,
    error              TEXT,
    tool_calls         TEXT NOT NULL DEFAULT '[]',
    pending_tool_calls TEXT NOT NULL DEFAULT '[]',
    -- while paused for client tools: the results of the same step's server tools
    held_results       TEXT NOT NULL DEFAULT '[]',
    idempotency_key    TEXT UNIQUE,
    created_at         TEXT NOT NULL,
    started_at         TEXT,
    finished_at        TEXT
);
CREATE INDEX runs_by_session ON runs (session_id, id DESC);
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running', 'requires_action');

-- Every SSE event of a run, as sent: `data` is the event's JSON, byte for byte.
CREATE TABLE events (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    INTEGER NOT NULL,
    type   TEXT NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- step 2: full-text search over message text
-- A plain FTS5 table (it keeps its own copy of the text, which snippet() needs), one row per
-- message under the message's rowid. The text is what a reader would search for: a text
-- block's text, a tool call's name and input, a tool result's output. Triggers keep it in
-- step with every write path, the cascade of a session's deletion included.
CREATE VIRTUAL TABLE message_search USING fts5(
    text,
    session_id UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_search (rowid, text, session_id)
    SELECT new.rowid, group_concat(
        CASE json_extract(value, '$.type')
            WHEN 'text' THEN json_extract(value, '$.text')
            WHEN 'tool_result' THEN json_extract(value, '$.content')
            WHEN 'tool_use' THEN json_extract(value, '$.name') || ' ' || json_extract(value, '$.input')
        END, char(10)), new.session_id
    FROM json_each(new.content);
END;

CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
    DELETE FROM message_search WHERE rowid = old.rowid;
END;

CREATE TRIGGER message_search_update AFTER UPDATE OF content ON messages BEGIN
    DELETE FROM message_search WHERE rowid = old.rowid;
    INSERT INTO message_search (rowid, text, session_id)
    SELECT new.rowid, group_concat(
        CASE json_extract(value, '$.type')
            WHEN 'text' THEN json_extract(value, '$.text')
            WHEN 'tool_result' THEN json_extract(value, '$.content')
            WHEN 'tool_use' THEN json_extract(value, '$.name') || ' ' || json_extract(value, '$.input')
        END, char(10)), new.session_id
    FROM json_each(new.content);
END;

INSERT INTO message_search (rowid, text, session_id)
SELECT messages.rowid, group_concat(
    CASE json_extract(value, '$.type')
        WHEN 'text' THEN json_extract(value, '$.text')
        WHEN 'tool_result' THEN json_extract(value, '$.content')
        WHEN 'tool_use' THEN json_extract(value, '$.name') || ' ' || json_extract(value, '$.input')
    END, char(10)), messages.session_id
FROM messages, json_each(messages.content)
GROUP BY messages.rowid;

-- step 3: the event log in chunks
-- A row holds a run's consecutive events from one commit (at most 256): their types,
-- space-separated, and their JSON, newline-separated (see store/eventlog.py). The rows of the
-- one-event-a-row log become one-event chunks, byte for byte.
ALTER TABLE events RENAME TO events_by_event;

CREATE TABLE events (
    run_id    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    types     TEXT NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (run_id, first_seq)
) WITHOUT ROWID;

INSERT INTO events (run_id, first_seq, last_seq, types, data)
SELECT run_id, seq, seq, type, data FROM events_by_event;

DROP TABLE events_by_event;

-- step 4: new messages are indexed by the writer, once per commit
-- FTS5 writes its pending index to disk at every SAVEPOINT of a transaction it takes part in,
-- and the writer gives each operation a savepoint: the insert trigger wrote an index segment
-- per message. The server now indexes new messages itself at the end of each commit, in the
-- same transaction, with the same text (store/searchindex.py). Deletes and edits still go
-- through the triggers above.
DROP TRIGGER message_search_insert;

-- step 5: the event log in the order it is written
-- Keyed by (run_id, first_seq), a thousand runs streaming at once put each commit's rows on a
-- thousand different pages of the table, every one of which the commit then wrote out again
-- (17-31 ms of the writer's time a commit, against 5-10 ms now). In a rowid table the rows of
-- a commit go onto the last few pages; the index that finds a run's rows holds only keys.
ALTER TABLE events RENAME TO events_by_run;

CREATE TABLE events (
    run_id    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    types     TEXT NOT NULL,
    data      BLOB NOT NULL
);

CREATE UNIQUE INDEX events_of_run ON events (run_id, first_seq);

INSERT INTO events (run_id, first_seq, last_seq, types, data)
SELECT run_id, first_seq, last_seq, types, data FROM events_by_run ORDER BY run_id, first_seq;

DROP TABLE events_by_run;

-- step 6: a run's deadline, set per agent, and the time a run has used of it
-- NULL: the server's run_max_seconds. Either way clamped to its run_max_seconds_ceiling.
ALTER TABLE agents ADD COLUMN max_run_seconds REAL CHECK (max_run_seconds > 0);
-- Seconds the server has driven the run, time paused for client tools left out: a resumed
-- run goes on with what is left of its deadline.
ALTER TABLE runs ADD COLUMN run_seconds REAL NOT NULL DEFAULT 0;

-- step 7: API keys
-- A key is shown once, when it is made; only its SHA-256 is kept. A key is 32 random bytes,
-- so its hash can be neither reversed nor guessed, and finding a key by its hash needs no salt
-- or slow hash. A revoked key keeps its row (lists show it revoked) and finds nothing.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    scope        TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    hash         TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

-- step 8: tenants, and the server's secrets
-- Every agent and session belongs to a tenant, the tenant of the API key that made it; runs,
-- messages and events belong to their session's. Without auth everything is in `default`,
-- and so is every row made before this step. Names are unique within a tenant, so agents and
-- sessions are made again with UNIQUE (tenant, name) in place of UNIQUE (name); the migration
-- runs with foreign keys off (so that dropping the old tables deletes nothing) and checks
-- them before it commits.
ALTER TABLE api_keys ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';

CREATE TABLE agents_next (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL DEFAULT 'default',
    name            TEXT NOT NULL,
    provider        TEXT NOT NULL,
    model           TEXT,
    system          TEXT,
    tools           TEXT NOT NULL DEFAULT '[]',
    max_steps       INTEGER NOT NULL DEFAULT 16 CHECK (max_steps >= 1),
    max_tokens      INTEGER,
    temperature     REAL,
    options         TEXT NOT NULL DEFAULT '{}',
    auto            INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    max_run_seconds REAL CHECK (max_run_seconds > 0),
    UNIQUE (tenant, name)
);
INSERT INTO agents_next (id, name, provider, model, system, tools, max_steps, max_tokens,
    temperature, options, auto, created_at, updated_at, max_run_seconds)
SELECT id, name, provider, model, system, tools, max_steps, max_tokens, temperature, options,
    auto, created_at, updated_at, max_run_seconds FROM agents;
DROP TABLE agents;
ALTER TABLE agents_next RENAME TO agents;
CREATE INDEX agents_by_tenant ON agents (tenant, created_at, id);

CREATE TABLE sessions_next (
    id                     TEXT PRIMARY KEY,
    tenant                 TEXT NOT NULL DEFAULT 'default',
    name                   TEXT,
    agent_id               TEXT NOT NULL REFERENCES agents (id),
    work_dir               TEXT,
    title                  TEXT,
    tags                   TEXT NOT NULL DEFAULT '[]',
    metadata               TEXT NOT NULL DEFAULT '{}',
    status                 TEXT NOT NULL DEFAULT 'idle'
                           CHECK (status IN ('idle', 'running', 'requires_action', 'failed')),
    last_seq               INTEGER NOT NULL DEFAULT 0,
    message_count          INTEGER NOT NULL DEFAULT 0,
    turn_count             INTEGER NOT NULL DEFAULT 0,
    input_tokens           INTEGER NOT NULL DEFAULT 0,
    output_tokens          INTEGER NOT NULL DEFAULT 0,
    parent_id              TEXT,
    forked_from_message_id TEXT,
    ttl_seconds            INTEGER,
    expires_at             TEXT,
    archived_at            TEXT,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL,
    UNIQUE (tenant, name)
);
INSERT INTO sessions_next (id, name, agent_id, work_dir, title, tags, metadata, status,
    last_seq, message_count, turn_count, input_tokens, output_tokens, parent_id,
    forked_from_message_id, ttl_seconds, expires_at, archived_at, created_at, updated_at)
SELECT id, name, agent_id, work_dir, title, tags, metadata, status, last_seq, message_count,
    turn_count, input_tokens, output_tokens, parent_id, forked_from_message_id, ttl_seconds,
    expires_at, archived_at, created_at, updated_at FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_next RENAME TO sessions;
CREATE INDEX sessions_by_updated ON sessions (tenant, updated_at DESC, id DESC);
CREATE INDEX sessions_by_created ON sessions (tenant, created_at DESC, id DESC);
CREATE INDEX sessions_by_agent ON sessions (agent_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL;

-- An idempotency key is the client's, unique within its tenant: the column holds
-- `<tenant>:<key>` (tenant names hold no `:`).
UPDATE runs SET idempotency_key = 'default:' || idempotency_key
WHERE idempotency_key IS NOT NULL;

-- Secrets the server makes for itself, by name. `value` is sealed with a key kept outside
-- the database (see store/secrets.py): a copy of the database file alone does not hold them.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- step 9: token counts, compaction, webhooks
-- Every message keeps its size in tokens: the provider's count where it reported one (an
-- assistant message: its step's output tokens), else an estimate (about four characters of
-- its JSON a token); `tokens_source` says which. Rows stored before this step get the
-- estimate. A new kind of message, `compaction`, holds the summary of the turns up to
-- `compaction.through_seq`: the messages table is made again for the wider CHECK, with each
-- row's rowid kept (the search index refers to rows by it) and its triggers made again.
CREATE TABLE messages_next (
    id            TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'compaction')),
    content       TEXT NOT NULL,
    run_id        TEXT,
    created_at    TEXT NOT NULL,
    tokens        INTEGER NOT NULL DEFAULT 0,
    tokens_source TEXT NOT NULL DEFAULT 'estimate'
                  CHECK (tokens_source IN ('estimate', 'provider')),
    compaction    TEXT,
    UNIQUE (session_id, seq)
);
INSERT INTO messages_next (rowid, id, session_id, seq, role, content, run_id, created_at,
    tokens, tokens_source)
SELECT rowid, id, session_id, seq, role, content, run_id, created_at,
    max(1, length(content) / 4), 'estimate' FROM messages;
DROP TABLE messages;
ALTER TABLE messages_next RENAME TO messages;
CREATE INDEX messages_by_run ON messages (run_id);
-- a session's compactions, newest first, without a scan of its history
CREATE INDEX messages_compactions ON messages (session_id, seq DESC) WHERE role = 'compaction';

CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
    DELETE FROM message_search WHERE rowid = old.rowid;
END;

CREATE TRIGGER message_search_update AFTER UPDATE OF content ON messages BEGIN
    DELETE FROM message_search WHERE rowid = old.rowid;
    INSERT INTO message_search (rowid, text, session_id)
    SELECT new.rowid, group_concat(
        CASE json_extract(value, '$.type')
            WHEN 'text' THEN json_extract(value, '$.text')
            WHEN 'tool_result' THEN json_extract(value, '$.content')
            WHEN 'tool_use' THEN json_extract(value, '$.name') || ' ' || json_extract(value, '$.input')
        END, char(10)), new.session_id
    FROM json_each(new.content);
END;

-- An agent's context window and the input size, in tokens, past which a run compacts (NULL:
-- the defaults, by provider and model), and the agent that writes its summaries (NULL: itself).
ALTER TABLE agents ADD COLUMN context_window INTEGER CHECK (context_window >= 1);
ALTER TABLE agents ADD COLUMN compact_at INTEGER CHECK (compact_at >= 1);
ALTER TABLE agents ADD COLUMN summary_agent TEXT;

-- Where a run's end is posted (the session's wins over its agent's), and the endpoint's
-- signing secret, sealed like the stream-token secret (see server/sealing.py).
ALTER TABLE agents ADD COLUMN webhook_url TEXT;
ALTER TABLE agents ADD COLUMN webhook_secret TEXT;
ALTER TABLE sessions ADD COLUMN webhook_url TEXT;
ALTER TABLE sessions ADD COLUMN webhook_secret TEXT;

-- The outbox: one row per run end to post, written in the transaction that stores the end.
-- `id` is the webhook-id every attempt carries; `payload` the body, byte for byte; the
-- secret is copied sealed, so that a later change of endpoint does not re-sign old events.
CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    run_id          TEXT NOT NULL,
    type            TEXT NOT NULL,
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL,
    payload         BLOB NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- unix seconds: when the next attempt is due; when the last was made, and the random
    -- share (0.5 to 1) of its backoff drawn then, so that a server started with other
    -- retry settings can schedule what is pending by its own
    next_attempt_at REAL NOT NULL,
    last_attempt_at REAL,
    jitter          REAL NOT NULL DEFAULT 1.0,
    created_at      TEXT NOT NULL,
    created_unix    REAL NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_outbox_of_session ON webhook_outbox (session_id, id);

-- Every attempt at a delivery: what came back (status_code NULL: no answer), and when.
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    at          TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;

-- step 10: queue tickets
-- On a database several processes share, a message sent with `if_busy: queue` takes a ticket
-- as it arrives: `sessions.tickets` counts the session's tickets handed out, `runs.ticket` is
-- the run's, and queued runs start in ticket order, whichever process holds them. (One
-- process on SQLite orders its queue in memory and hands out none.)
ALTER TABLE sessions ADD COLUMN tickets INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN ticket INTEGER;
