// sessiond's browser SDK: a dependency-free ES module, served by the server at GET /sdk.js.
//
//   import { Sessiond } from "/sdk.js";
//   const sd = new Sessiond({ apiKey });            // same origin; or { baseUrl: "http://…" }
//   const run = await sd.startRun("demo", "hello");
//   const follower = sd.follow(run, { onText: (t) => out.append(t) });
//   const done = await follower.done;               // the run's `done` event
//
// A run is followed with EventSource on its `events_url` (which carries a stream token when
// the server has keys, since EventSource cannot send one). A dropped connection is resumed
// with Last-Event-ID: by the browser itself, or, once the browser has given up, by the
// follower with `last_event_id=` on a fresh URL. Every event is handed over once, in order.

/**
 * @typedef {{input_tokens: number, output_tokens: number}} Usage
 * @typedef {{id: string, name: string, input: Object<string, any>}} ToolCall
 * @typedef {{tool_use_id: string, content: string, is_error?: boolean}} ToolResultBlock
 * @typedef {{name: string, input_schema: Object<string, any>, description?: string}} ClientTool
 * @typedef {{run_id: string, session_id: string, status: string,
 *            queue_position: number|null, events_url: string}} RunStarted
 * @typedef {{type: "message_start", message: {id: string, model: string|null}, run_id?: string}
 *   | {type: "content_block_start", index: number, content_block: Object<string, any>}
 *   | {type: "text_delta", text: string, index: number}
 *   | {type: "input_json_delta", partial_json: string, index: number}
 *   | {type: "content_block_stop", index: number}
 *   | {type: "message_delta", delta: {stop_reason: string|null}, usage: Usage}
 *   | {type: "message_stop"}
 *   | {type: "tool_result", tool_use_id: string, name: string, content: string, is_error: boolean}
 *   | {type: "requires_action", run_id: string, tool_calls: ToolCall[]}
 *   | {type: "error", error: {type: string, message: string}}
 *   | DoneEvent} RunEvent
 * @typedef {{type: "done", usage: Usage, steps: number, run_id: string,
 *            stop_reason: string|null, status: string}} DoneEvent
 * @typedef {Object} FollowHandlers
 * @property {(event: RunEvent, id: number) => void} [onEvent] every event, in order, once
 * @property {(text: string) => void} [onText] each piece of the reply's text
 * @property {(calls: ToolCall[]) => (ToolResultBlock[] | Promise<ToolResultBlock[]>)} [onToolCalls]
 *   the run waits for client tools: return their results and the run goes on
 * @property {(error: {type: string, message: string}) => void} [onError] the run failed
 * @property {(state: "open" | "reconnecting" | "closed") => void} [onConnection]
 */

export const RUN_EVENTS = [
  "message_start", "content_block_start", "text_delta", "input_json_delta",
  "content_block_stop", "message_delta", "message_stop", "tool_result", "requires_action",
  "error", "done",
];

/** An error answer of the API: `type` is its kind (`not_found`, `session_busy`, …). */
export class SessiondError extends Error {
  /** @param {number} status @param {string} type @param {string} message @param {any} body */
  constructor(status, type, message, body) {
    super(message);
    this.name = "SessiondError";
    this.status = status;
    this.type = type;
    this.body = body;
  }
}

export class Sessiond {
  /**
   * @param {{baseUrl?: string, apiKey?: string|null, maxReconnects?: number,
   *          EventSource?: typeof EventSource, fetch?: typeof fetch}} [options]
   */
  constructor(options = {}) {
    this.baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
    this.apiKey = options.apiKey ?? null;
    this.maxReconnects = options.maxReconnects ?? 10;
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** An absolute URL for an API path. @param {string} path */
  url(path) {
    return new URL(this.baseUrl + path, globalThis.location?.href).toString();
  }

  /**
   * One API call; an error answer throws SessiondError.
   * @param {string} method @param {string} path @param {any} [body]
   * @returns {Promise<Response>}
   */
  async send(method, path, body) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.apiKey) headers["Authorization"] = `Bearer ${this.apiKey}`;
    const response = await this.fetch(this.url(path), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) {
      let parsed = null;
      try { parsed = await response.json(); } catch { /* not JSON */ }
      const error = parsed?.error ?? { type: "http_error", message: `HTTP ${response.status}` };
      throw new SessiondError(response.status, error.type, error.message, parsed);
    }
    return response;
  }

  /** @param {string} method @param {string} path @param {any} [body] */
  async json(method, path, body) {
    return (await this.send(method, path, body)).json();
  }

  /**
   * Start a run in the background (the session by id or name).
   * @param {string} session @param {string} message
   * @param {{agentId?: string, ifBusy?: "reject"|"queue"|"interrupt", tools?: ClientTool[]}} [options]
   * @returns {Promise<RunStarted>}
   */
  startRun(session, message, options = {}) {
    const body = { message };
    if (options.agentId) body.agent_id = options.agentId;
    if (options.ifBusy) body.if_busy = options.ifBusy;
    if (options.tools) body.tools = options.tools;
    return this.json("POST", `${sessionPath(session)}/runs`, body);
  }

  /** The run as stored now. @param {string} session @param {string} runId */
  getRun(session, runId) {
    return this.json("GET", runPath(session, runId));
  }

  /** Stop a run; resolves with it once stopped. @param {string} session @param {string} runId */
  cancel(session, runId) {
    return this.json("POST", `${runPath(session, runId)}/cancel`);
  }

  /**
   * Answer the client tools a paused run waits for; resolves once the run has gone on (follow
   * it to see what follows).
   * @param {string} session @param {string} runId @param {ToolResultBlock[]} results
   */
  async toolResults(session, runId, results) {
    const response = await this.send("POST", `${runPath(session, runId)}/tool_results`, { results });
    await response.body?.cancel(); // its stream is the follower's to read
  }

  /** A fresh events_url for a run (a new stream token). @param {string} session @param {string} runId */
  async eventsUrl(session, runId) {
    const path = `${sessionPath(session)}/events_url?run_id=${encodeURIComponent(runId)}`;
    return (await this.json("GET", path)).events_url;
  }

  /**
   * Follow a run's events until its `done`.
   * @param {RunStarted} run @param {FollowHandlers} [handlers] @returns {RunFollower}
   */
  follow(run, handlers = {}) {
    return new RunFollower(this, run, handlers);
  }
}

/** One run followed across connections. `done` resolves with its `done` event. */
export class RunFollower {
  /** @param {Sessiond} sd @param {RunStarted} run @param {FollowHandlers} handlers */
  constructor(sd, run, handlers) {
    this.sd = sd;
    this.run = run;
    this.handlers = handlers;
    this.lastId = 0;
    this.failures = 0;
    this.source = null;
    this.closed = false;
    /** @type {Promise<DoneEvent>} */
    this.done = new Promise((resolve, reject) => { this.resolve = resolve; this.reject = reject; });
    this.open(run.events_url);
  }

  /** @param {string} eventsUrl */
  open(eventsUrl) {
    const url = new URL(this.sd.url(eventsUrl));
    if (this.lastId) url.searchParams.set("last_event_id", String(this.lastId));
    const source = new this.sd.EventSource(url.toString());
    this.source = source;
    source.onopen = () => { this.failures = 0; this.handlers.onConnection?.("open"); };
    for (const type of RUN_EVENTS) {
      source.addEventListener(type, (message) => this.take(/** @type {MessageEvent} */ (message)));
    }
    source.onerror = () => {
      if (this.closed || source !== this.source) return;
      if (source.readyState !== this.sd.EventSource.CLOSED) {
        this.handlers.onConnection?.("reconnecting"); // the browser retries with Last-Event-ID
        return;
      }
      this.reopen(); // the browser gave up (an error status): start again from the last id
    };
  }

  /** @param {MessageEvent} message */
  take(message) {
    const id = Number(message.lastEventId);
    if (!Number.isFinite(id) || id <= this.lastId || this.closed) return; // seen already
    this.lastId = id;
    /** @type {RunEvent} */
    const event = JSON.parse(message.data);
    this.handlers.onEvent?.(event, id);
    if (event.type === "text_delta") this.handlers.onText?.(event.text);
    else if (event.type === "error") this.handlers.onError?.(event.error);
    else if (event.type === "requires_action") this.pending = event.tool_calls;
    else if (event.type === "done") this.finish(event);
  }

  /** @param {DoneEvent} event */
  async finish(event) {
    this.source?.close();
    this.source = null;
    const calls = this.pending;
    this.pending = null;
    if (event.status === "requires_action" && calls && this.handlers.onToolCalls) {
      try {
        // a replay passes every pause of the run: one answered already is followed on
        const now = await this.sd.getRun(this.run.session_id, this.run.run_id);
        const waiting = new Set((now.pending_tool_calls || []).map((call) => call.id));
        if (now.status !== "requires_action" || !calls.every((call) => waiting.has(call.id))) {
          this.open(this.run.events_url);
          return;
        }
        const results = await this.handlers.onToolCalls(calls);
        await this.sd.toolResults(this.run.session_id, this.run.run_id, results);
        this.open(this.run.events_url); // the run goes on after the id we hold
      } catch (error) {
        this.fail(error);
      }
      return;
    }
    this.closed = true;
    this.handlers.onConnection?.("closed");
    this.resolve(event);
  }

  async reopen() {
    this.source?.close();
    this.source = null;
    this.failures += 1;
    if (this.failures > this.sd.maxReconnects) {
      this.fail(new SessiondError(0, "unreachable", `run ${this.run.run_id}: the stream keeps failing`, null));
      return;
    }
    this.handlers.onConnection?.("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** this.failures, 5000)));
    if (this.closed) return;
    let eventsUrl = this.run.events_url;
    if (this.sd.apiKey) { // a token may have expired: ask for a fresh one
      try {
        eventsUrl = await this.sd.eventsUrl(this.run.session_id, this.run.run_id);
      } catch (error) {
        if (error instanceof SessiondError && error.status && error.status < 500) {
          this.fail(error);
          return;
        }
      }
    }
    this.open(eventsUrl);
  }

  /** Stop the run (it ends `cancelled`; `done` still resolves). */
  cancel() {
    return this.sd.cancel(this.run.session_id, this.run.run_id);
  }

  /** Stop following (the run goes on). */
  close() {
    this.closed = true;
    this.source?.close();
    this.source = null;
    this.handlers.onConnection?.("closed");
  }

  /** @param {any} error */
  fail(error) {
    this.close();
    this.reject(error);
  }
}

/** @param {string} session */
function sessionPath(session) {
  return `/sessions/${encodeURIComponent(session)}`;
}

/** @param {string} session @param {string} runId */
function runPath(session, runId) {
  return `${sessionPath(session)}/runs/${encodeURIComponent(runId)}`;
}
