-- sessiond's database schema on PostgreSQL: schema.sql's steps in PostgreSQL's dialect.
--
-- schema.sql is the one source of the schema; this file follows it step for step, under the
-- same numbers and titles (tests/test_pg_store.py checks that both list the same steps and
-- that a migrated database of each has the same tables and columns). A change to the schema
-- is a new step at the end of both files. The server applies, in order and each in its own
-- transaction, every step above the number kept in `schema_step`, under an advisory lock so
-- that processes starting together migrate once.
--
-- Column types follow SQLite's: TEXT stays TEXT (timestamps as RFC 3339 strings, JSON as
-- msgspec-encoded text), INTEGER becomes BIGINT, REAL DOUBLE PRECISION, BLOB BYTEA.

-- step 1: agents, sessions, messages, runs, events
-- SQLite's strftime('%Y-%m-%dT%H:%M:%fZ', at, '+N seconds'): `at` plus `seconds`, as an RFC 3339
-- UTC string with milliseconds; NULL, as in SQLite, when `at` is not a time.
CREATE FUNCTION sessiond_plus_seconds(at TEXT, seconds BIGINT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN to_char((at::timestamptz + seconds * interval '1 second') AT TIME ZONE 'UTC',
                   'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
    RETURN NULL;
END;
$$;

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    provider    TEXT NOT NULL,
    model       TEXT,
    system      TEXT,
    tools       TEXT NOT NULL DEFAULT '[]',
    max_steps   BIGINT NOT NULL DEFAULT 16 CHECK (max_steps >= 1),
    max_tokens  BIGINT,
    temperature DOUBLE PRECISION,
    options     TEXT NOT NULL DEFAULT '{}',
    auto        BIGINT NOT NULL DEFAULT 0,
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
    last_seq               BIGINT NOT NULL DEFAULT 0,
    message_count          BIGINT NOT NULL DEFAULT 0,
    turn_count             BIGINT NOT NULL DEFAULT 0,
    input_tokens           BIGINT NOT NULL DEFAULT 0,
    output_tokens          BIGINT NOT NULL DEFAULT 0,
    parent_id              TEXT,
    forked_from_message_id TEXT,
    ttl_seconds            BIGINT,
    expires_at             TEXT,
    archived_at            TEXT,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL
);
CREATE INDEX sessions_by_updated ON sessions (updated_at DESC, id DESC);
CREATE INDEX sessions_by_created ON sessions (created_at DESC, id DESC);
CREATE INDEX sessions_by_agent ON sessions (agent_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE messages (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content    TEXT NOT NULL,
    run_id     TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (session_id, seq)
);
CREATE INDEX messages_by_run ON messages (run_id);

CREATE TABLE runs (
    id                 TEXT PRIMARY KEY,
    session_id         TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    agent_id           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('queued', 'running', 'requires_action',
                           'completed', 'failed', 'cancelled', 'interrupted')),
    input              TEXT NOT NULL,
    options            TEXT NOT NULL DEFAULT '{}',
    steps              BIGINT NOT NULL DEFAULT 0,
    input_tokens       BIGINT NOT NULL DEFAULT 0,
    output_tokens      BIGINT NOT NULL DEFAULT 0,
    stop_reason        TEXT,
    error              TEXT,
    tool_calls         TEXT NOT NULL DEFAULT '[]',
    pending_tool_calls TEXT NOT NULL DEFAULT '[]',
    held_results       TEXT NOT NULL DEFAULT '[]',
    idempotency_key    TEXT UNIQUE,
    created_at         TEXT NOT NULL,
    started_at         TEXT,
    finished_at        TEXT
);
CREATE INDEX runs_by_session ON runs (session_id, id DESC);
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running', 'requires_action');

CREATE TABLE events (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    type   TEXT NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- step 2: full-text search over message text
-- In place of FTS5: one row per message with the same text (store/searchindex.py writes it),
-- a generated tsvector of it under the `simple` configuration (words as they are, lowercased,
-- no stemming) once every run of characters other than letters and digits is a space, as
-- unicode61 splits words (PostgreSQL's parser would keep `notes_2.txt` as one file name);
-- and a GIN index. A message's row goes with it.
CREATE FUNCTION sessiond_words(text TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$ SELECT regexp_replace(text, '[^[:alnum:]]+', ' ', 'g') $$;

CREATE TABLE message_search (
    message_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    text       TEXT,
    words      tsvector GENERATED ALWAYS AS
               (to_tsvector('simple', sessiond_words(coalesce(text, '')))) STORED
);
CREATE INDEX message_search_words ON message_search USING gin (words);
CREATE INDEX message_search_by_session ON message_search (session_id);

-- step 3: the event log in chunks
CREATE TABLE events_chunked (
    run_id    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    first_seq BIGINT NOT NULL,
    last_seq  BIGINT NOT NULL,
    types     TEXT NOT NULL,
    data      BYTEA NOT NULL,
    PRIMARY KEY (run_id, first_seq)
);
INSERT INTO events_chunked (run_id, first_seq, last_seq, types, data)
SELECT run_id, seq, seq, type, data FROM events;
DROP TABLE events;
ALTER TABLE events_chunked RENAME TO events;

-- step 4: new messages are indexed by the writer, once per commit
-- Nothing to do here: the insert trigger it drops was FTS5's, and message_search is written
-- by the server from step 2 on.

-- step 5: the event log in the order it is written
-- A heap table keeps rows in the order written already; the key becomes a unique index of
-- the same name as SQLite's.
ALTER TABLE events DROP CONSTRAINT events_chunked_pkey;
CREATE UNIQUE INDEX events_of_run ON events (run_id, first_seq);

-- step 6: a run's deadline, set per agent, and the time a run has used of it
ALTER TABLE agents ADD COLUMN max_run_seconds DOUBLE PRECISION CHECK (max_run_seconds > 0);
ALTER TABLE runs ADD COLUMN run_seconds DOUBLE PRECISION NOT NULL DEFAULT 0;

-- step 7: API keys
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
ALTER TABLE api_keys ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';

ALTER TABLE agents ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE agents DROP CONSTRAINT agents_name_key;
ALTER TABLE agents ADD CONSTRAINT agents_tenant_name_key UNIQUE (tenant, name);
CREATE INDEX agents_by_tenant ON agents (tenant, created_at, id);

ALTER TABLE sessions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE sessions DROP CONSTRAINT sessions_name_key;
ALTER TABLE sessions ADD CONSTRAINT sessions_tenant_name_key UNIQUE (tenant, name);
DROP INDEX sessions_by_updated;
DROP INDEX sessions_by_created;
CREATE INDEX sessions_by_updated ON sessions (tenant, updated_at DESC, id DESC);
CREATE INDEX sessions_by_created ON sessions (tenant, created_at DESC, id DESC);

UPDATE runs SET idempotency_key = 'default:' || idempotency_key
WHERE idempotency_key IS NOT NULL;

CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- step 9: token counts, compaction, webhooks
-- As SQLite's step 9: each message's size in tokens and where it came from, a `compaction`
-- kind of message (PostgreSQL widens the CHECK in place: no rebuild, and message_search is
-- keyed by message id, not by rowid), the agents' budgets and summary agent, the webhook
-- endpoints of agents and sessions, and the webhook outbox and its attempts.
ALTER TABLE messages ADD COLUMN tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN tokens_source TEXT NOT NULL DEFAULT 'estimate'
    CHECK (tokens_source IN ('estimate', 'provider'));
ALTER TABLE messages ADD COLUMN compaction TEXT;
UPDATE messages SET tokens = greatest(1, length(content) / 4);
ALTER TABLE messages DROP CONSTRAINT messages_role_check;
ALTER TABLE messages ADD CONSTRAINT messages_role_check
    CHECK (role IN ('user', 'assistant', 'compaction'));
CREATE INDEX messages_compactions ON messages (session_id, seq DESC) WHERE role = 'compaction';

ALTER TABLE agents ADD COLUMN context_window BIGINT CHECK (context_window >= 1);
ALTER TABLE agents ADD COLUMN compact_at BIGINT CHECK (compact_at >= 1);
ALTER TABLE agents ADD COLUMN summary_agent TEXT;

ALTER TABLE agents ADD COLUMN webhook_url TEXT;
ALTER TABLE agents ADD COLUMN webhook_secret TEXT;
ALTER TABLE sessions ADD COLUMN webhook_url TEXT;
ALTER TABLE sessions ADD COLUMN webhook_secret TEXT;

CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    run_id          TEXT NOT NULL,
    type            TEXT NOT NULL,
    url             TEXT NOT NULL,
    secret          TEXT NOT NULL,
    payload         BYTEA NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_attempt_at DOUBLE PRECISION,
    jitter          DOUBLE PRECISION NOT NULL DEFAULT 1.0,
    created_at      TEXT NOT NULL,
    created_unix    DOUBLE PRECISION NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_outbox_of_session ON webhook_outbox (session_id, id);

CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    at          TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- step 10: queue tickets
-- As SQLite's step 10: the tickets a session has handed out, each queued run's own, and the
-- index a process reads the session's first waiting ticket by.
ALTER TABLE sessions ADD COLUMN tickets BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN ticket BIGINT;
CREATE INDEX runs_ticketed ON runs (session_id, ticket) WHERE status = 'queued';
