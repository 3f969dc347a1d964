// sessiond's web console: a client of the public API and nothing else. Runs are started and
// followed with the server's browser SDK (/sdk.js); everything a session holds is set as text
// (textContent), never parsed as markup.

import { Sessiond } from "/sdk.js";
import * as api from "./api.js";

const LIVE = new Set(["running", "queued", "requires_action"]);
const POLL_MS = 2000;

// -- small DOM helpers ------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else if (name === "value") node.value = value;
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

const $ = (selector) => document.querySelector(selector);

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function tokens(usage) {
  if (!usage) return "";
  return `${usage.input_tokens} in / ${usage.output_tokens} out tokens`;
}

function duration(run) {
  if (!run.started_at || !run.finished_at) return "";
  const ms = Date.parse(run.finished_at) - Date.parse(run.started_at);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function sdk() {
  return new Sessiond({ apiKey: api.storedKey() || null });
}

function label(session) {
  return session.name || session.title || session.id;
}

// -- errors and the key -----------------------------------------------------------------------

function showError(err) {
  const message = err instanceof api.ApiError ? `${err.message} (${err.type})` : String(err.message || err);
  $("#error-text").textContent = message;
  $("#error").hidden = false;
  if (err instanceof api.ApiError && err.status === 401) askKey();
}

function clearError() {
  $("#error").hidden = true;
  $("#error-text").textContent = "";
}

function askKey() {
  $("#keybox").hidden = false;
  $("#api-key").focus();
}

async function guarded(work) {
  try {
    return await work();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

// -- the sidebar ------------------------------------------------------------------------------

const sidebar = {
  agents: [],
  shown: "",
  timer: null,

  async loadAgents() {
    this.agents = await api.all("/agents");
    const select = $("#agent-select");
    const chosen = select.value;
    select.replaceChildren(
      ...this.agents.map((a) => el("option", { value: a.id, text: `${a.name} (${a.provider})` })),
    );
    if (chosen && this.agents.some((a) => a.id === chosen)) select.value = chosen;
  },

  async refresh() {
    const q = $("#search-input").value.trim();
    let sessions;
    if (q) {
      const page = await api.call("GET", `/sessions/search?q=${encodeURIComponent(q)}&limit=50`);
      sessions = page.data.map((hit) => hit.session);
    } else {
      const archived = $("#show-archived").checked ? "&status=archived" : "";
      const page = await api.call("GET", `/sessions?limit=100${archived}`);
      sessions = page.data;
    }
    this.render(sessions);
  },

  render(sessions) {
    const current = route().session;
    const shape = JSON.stringify(sessions.map((s) => [s.id, s.status, label(s), s.updated_at, current]));
    if (shape === this.shown) return;
    this.shown = shape;
    $("#session-list").replaceChildren(
      ...sessions.map((s) =>
        el(
          "li",
          {
            "data-testid": "session-item",
            "data-session-id": s.id,
            "data-status": s.status,
            class: s.id === current ? "current" : "",
          },
          el("a", { href: `#/sessions/${s.id}`, text: label(s) }),
          el("span", { class: `badge ${s.status}`, text: s.status }),
        ),
      ),
    );
  },

  poll() {
    clearTimeout(this.timer);
    this.timer = setTimeout(async () => {
      if (document.visibilityState === "visible" && $("#keybox").hidden) {
        try {
          await this.refresh();
        } catch (err) {
          if (err.status === 401) showError(err);
        }
      }
      this.poll();
    }, POLL_MS);
  },
};

async function createSession(event) {
  event.preventDefault();
  const body = { agent_id: $("#agent-select").value };
  const name = $("#session-name").value.trim();
  const workDir = $("#session-workdir").value.trim();
  if (name) body.name = name;
  if (workDir) body.work_dir = workDir;
  await guarded(async () => {
    const session = await api.call("POST", "/sessions", body);
    $("#session-name").value = "";
    clearError();
    await sidebar.refresh();
    location.hash = `#/sessions/${session.id}`;
  });
}

async function importFile(event) {
  const file = event.target.files[0];
  if (!file) return;
  await guarded(async () => {
    const result = await api.upload("/sessions/import", file);
    await sidebar.refresh();
    if (result.sessions.length) location.hash = `#/sessions/${result.sessions[0].id}`;
  });
  event.target.value = "";
}

// -- one session: transcript, composer, live run ------------------------------------------------

class ChatView {
  constructor(id) {
    this.id = id;
    this.session = null;
    this.stream = null;
    this.active = null; // the run being followed
    this.turn = null; // its live rendering
    this.node = el("section", { class: "chat" });
  }

  async load() {
    const [session, messages, runs] = await Promise.all([
      api.call("GET", `/sessions/${this.id}`),
      api.all(`/sessions/${this.id}/messages`, 1000),
      api.all(`/sessions/${this.id}/runs`),
    ]);
    if (this.closed) return;
    this.session = session;
    // the oldest run not yet ended: its events are replayed and followed live
    const active = runs.filter((r) => LIVE.has(r.status)).pop() || null;
    this.render(messages, runs, active);
    if (active) await this.followRun(active.id, null);
  }

  close() {
    this.closed = true;
    if (this.stream) this.stream.close();
  }

  render(messages, runs, active) {
    const s = this.session;
    const header = el(
      "div",
      { class: "chat-head" },
      el("h2", { text: label(s) }),
      el("span", { class: `badge ${s.status}`, "data-testid": "session-status", text: s.status }),
      el("span", { class: "muted", text: `${s.message_count} messages · ${tokens(s.usage)}` }),
      el("a", { href: `#/sessions/${s.id}/runs`, text: "Runs" }),
    );
    this.transcript = el("div", { class: "transcript", "data-testid": "transcript" });
    const results = new Map();
    for (const m of messages)
      for (const b of m.content) if (b.type === "tool_result") results.set(b.tool_use_id, b);
    const lastOfRun = new Map();
    for (const m of messages) if (m.run_id) lastOfRun.set(m.run_id, m.id);
    const byRun = new Map(runs.map((r) => [r.id, r]));
    for (const m of messages) {
      const live = active && m.run_id === active.id;
      if (live && m.role !== "user") continue; // its events are replayed below
      const node = this.messageNode(m, results, live);
      if (node) this.transcript.append(node);
      const run = byRun.get(m.run_id);
      if (!live && run && lastOfRun.get(run.id) === m.id) this.transcript.append(this.runLine(run));
    }
    this.input = el("textarea", {
      "data-testid": "message-input",
      rows: 3,
      placeholder: "Message (Enter sends, Shift+Enter is a new line)",
      onkeydown: (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          this.send("reject");
        }
      },
    });
    this.busy = el(
      "div",
      { class: "busy", hidden: true },
      el("span", { text: "A run is in progress:" }),
      el("button", { type: "button", id: "busy-queue", text: "Queue after it", onclick: () => this.send("queue") }),
      el("button", { type: "button", id: "busy-interrupt", text: "Interrupt it", onclick: () => this.send("interrupt") }),
    );
    this.sendButton = el("button", { type: "button", "data-testid": "send", text: "Send", onclick: () => this.send("reject") });
    this.stopButton = el("button", { type: "button", "data-testid": "stop", text: "Stop", disabled: true, onclick: () => this.stop() });
    const composer = el("div", { class: "composer" }, this.input, el("div", { class: "actions" }, this.sendButton, this.stopButton), this.busy);
    this.node.replaceChildren(header, this.manageNode(), this.transcript, composer);
    this.scroll();
  }

  manageNode() {
    const s = this.session;
    const name = el("input", { value: s.name || "", placeholder: "name", "aria-label": "Name", "data-testid": "rename-input" });
    const title = el("input", { value: s.title || "", placeholder: "title", "aria-label": "Title" });
    const tags = el("input", { value: s.tags.join(", "), placeholder: "tags, comma separated", "aria-label": "Tags" });
    const save = async () => {
      await guarded(async () => {
        const body = {
          name: name.value.trim() || null,
          title: title.value.trim() || null,
          tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean),
        };
        await api.call("PATCH", `/sessions/${s.id}`, body);
        clearError();
        await this.reload();
        await sidebar.refresh();
      });
    };
    const archived = s.status === "archived";
    const archive = el("button", {
      type: "button",
      text: archived ? "Unarchive" : "Archive",
      onclick: () =>
        guarded(async () => {
          await api.call("POST", `/sessions/${s.id}/${archived ? "unarchive" : "archive"}`);
          await this.reload();
          await sidebar.refresh();
        }),
    });
    const remove = el("button", { type: "button", class: "danger", text: "Delete…" });
    remove.addEventListener("click", () => {
      if (remove.dataset.armed !== "1") {
        remove.dataset.armed = "1";
        remove.textContent = "Really delete? Click again";
        return;
      }
      guarded(async () => {
        await api.call("DELETE", `/sessions/${s.id}`);
        await sidebar.refresh();
        location.hash = "#/";
      });
    });
    const format = el(
      "select",
      { "aria-label": "Export format" },
      el("option", { value: "json", text: "json" }),
      el("option", { value: "markdown", text: "markdown" }),
      el("option", { value: "bundle", text: "bundle (zip)" }),
    );
    const exportButton = el("button", {
      type: "button",
      text: "Export",
      onclick: () =>
        guarded(async () => {
          const got =
            format.value === "bundle"
              ? await api.download("POST", "/sessions/export", { ids: [s.id] })
              : await api.download("GET", `/sessions/${s.id}/export?format=${format.value}`);
          const url = URL.createObjectURL(got.blob);
          const link = el("a", { href: url, download: got.name });
          document.body.append(link);
          link.click();
          link.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10_000);
        }),
    });
    return el(
      "details",
      { class: "manage" },
      el("summary", { text: "Session" }),
      el("div", { class: "row" }, name, title, tags, el("button", { type: "button", text: "Save", onclick: save })),
      el("div", { class: "row" }, archive, remove, format, exportButton),
    );
  }

  messageNode(m, results, live) {
    const blocks = m.content.filter((b) => b.type !== "tool_result");
    if (!blocks.length) return null; // a turn of tool results: shown in their calls
    const node = el("div", { class: `message ${m.role}`, "data-testid": "message", "data-role": m.role, "data-message-id": m.id });
    for (const b of blocks) {
      if (b.type === "text") node.append(el("div", { class: "text", text: b.text }));
      else if (b.type === "tool_use") node.append(toolCall(b.name, b.id, b.input, results.get(b.id)));
    }
    if (!live)
      node.append(
        el("button", { type: "button", class: "fork link", "data-testid": "fork", text: "Fork here", onclick: () => this.fork(m.id) }),
      );
    return node;
  }

  runLine(run) {
    const parts = [`${run.status}`, `${run.steps} step${run.steps === 1 ? "" : "s"}`, tokens(run.usage)];
    const node = el("div", { class: `run-line ${run.status}`, "data-testid": "run-usage", text: parts.join(" · ") });
    if (run.error) node.append(el("div", { class: "run-error", text: run.error.message }));
    return node;
  }

  scroll() {
    if (this.transcript) this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  async reload() {
    if (this.stream) this.stream.close();
    this.stream = null;
    this.active = null;
    await this.load();
  }

  async fork(messageId) {
    await guarded(async () => {
      const fork = await api.call("POST", `/sessions/${this.id}/fork`, { at_message_id: messageId });
      await sidebar.refresh();
      location.hash = `#/sessions/${fork.id}`;
    });
  }

  setRunning(running) {
    this.stopButton.disabled = !running;
    if (!running) this.busy.hidden = true;
  }

  async send(ifBusy) {
    const text = this.input.value;
    if (!text.trim()) return;
    if (this.active && ifBusy === "reject") {
      this.busy.hidden = false;
      return;
    }
    this.busy.hidden = true;
    await guarded(async () => {
      const started = await api.call("POST", `/sessions/${this.id}/runs`, { message: text, if_busy: ifBusy });
      clearError();
      this.input.value = "";
      this.listed = false; // the sidebar shows the run once its first event is in
      if (ifBusy !== "reject" && this.active) return; // the view moves on to it when the current one ends
      this.transcript.append(
        el("div", { class: "message user", "data-testid": "message", "data-role": "user" }, el("div", { class: "text", text })),
      );
      await this.followRun(started.run_id, started.events_url);
    });
  }

  async followRun(runId, url) {
    this.active = { id: runId };
    this.turn = new LiveTurn(this.transcript, () => this.scroll());
    this.setRunning(true);
    const run = {
      run_id: runId,
      session_id: this.session.id,
      events_url: url || (await this.eventsUrl(runId)),
    };
    const follower = sdk().follow(run, {
      onEvent: (event) => this.onEvent(event.type, event),
      onToolCalls: (calls) => this.askClientTools(calls),
    });
    this.stream = follower;
    follower.done.then(
      () => this.finished(follower),
      (err) => {
        if (this.closed || follower !== this.stream) return;
        showError(err);
        this.finished(follower);
      },
    );
  }

  async eventsUrl(runId) {
    const got = await api.call("GET", `/sessions/${this.id}/events_url?run_id=${encodeURIComponent(runId)}`);
    return got.events_url;
  }

  onEvent(type, data) {
    if (!this.listed) {
      this.listed = true; // not before: its request would delay the first token's
      setTimeout(() => sidebar.refresh().catch(() => {}), 0);
    }
    if (type === "error") showError(new Error(`the run failed: ${data.error.message}`));
    if (type === "requires_action" || type === "done") return; // the follower handles them
    this.turn.apply(type, data);
  }

  finished(follower) {
    if (this.closed || follower !== this.stream) return;
    this.stream = null;
    this.active = null;
    this.setRunning(false);
    this.reload().catch(showError);
    sidebar.refresh().catch(() => {});
  }

  // The run waits for client tools: a form for each call; resolves with their results.
  askClientTools(calls) {
    const forms = calls.map((call) =>
      el(
        "div",
        { class: "client-tool", "data-testid": "client-tool", "data-tool-name": call.name },
        el("div", { text: `The agent asks you to run ${call.name}:` }),
        el("pre", { text: pretty(call.input) }),
        el("textarea", { rows: 2, "aria-label": `Result of ${call.name}`, "data-testid": "tool-result-input" }),
      ),
    );
    const submit = el("button", { type: "submit", "data-testid": "tool-submit", text: "Send results" });
    const box = el("form", { class: "client-tools" }, ...forms, submit);
    if (this.asking) this.asking.remove();
    this.asking = box;
    this.transcript.append(box);
    this.scroll();
    return new Promise((resolve) => {
      box.addEventListener("submit", (event) => {
        event.preventDefault();
        box.remove();
        this.asking = null;
        clearError();
        resolve(
          calls.map((call, i) => ({
            type: "tool_result",
            tool_use_id: call.id,
            content: forms[i].querySelector("textarea").value,
          })),
        );
      });
    });
  }

  async stop() {
    if (!this.active) return;
    const waiting = this.asking; // a run paused for client tools has no stream to end it
    await guarded(() => api.call("POST", `/sessions/${this.id}/runs/${this.active.id}/cancel`));
    if (waiting && this.stream) {
      this.stream.close();
      this.finished(this.stream);
    }
  }
}

function toolCall(name, id, input, result) {
  const node = el(
    "details",
    { class: "tool-call", "data-testid": "tool-call", "data-tool-name": name, "data-tool-use-id": id },
    el("summary", {}, el("span", { class: "tool-name", text: name }), el("span", { class: "tool-state", text: "" })),
    el("div", { class: "label", text: "input" }),
    el("pre", { class: "tool-input", text: pretty(input) }),
    el("div", { class: "label", text: "output" }),
    el("pre", { class: "tool-output", text: "" }),
  );
  if (result) setResult(node, result.content, result.is_error);
  return node;
}

function setResult(node, content, isError) {
  node.querySelector(".tool-output").textContent = content;
  node.querySelector(".tool-state").textContent = isError ? " — error" : " — done";
  if (isError) node.classList.add("failed");
}

// One run's events as they arrive: a message per model step, text appended as it streams.
class LiveTurn {
  constructor(transcript, scrolled) {
    this.transcript = transcript;
    this.scrolled = scrolled;
    this.message = null;
    this.blocks = new Map();
  }

  apply(type, data) {
    if (type === "message_start") {
      this.message = el("div", { class: "message assistant", "data-testid": "message", "data-role": "assistant" });
      this.blocks = new Map();
      this.transcript.append(this.message);
    } else if (type === "content_block_start") {
      const block = data.content_block;
      if (block.type === "text") {
        const text = document.createTextNode(block.text || "");
        this.message.append(el("div", { class: "text" }, text));
        this.blocks.set(data.index, { text });
      } else if (block.type === "tool_use") {
        const node = toolCall(block.name, block.id, "", null);
        this.message.append(node);
        this.blocks.set(data.index, { tool: node, json: "" });
      }
    } else if (type === "text_delta") {
      const block = this.blocks.get(data.index);
      if (block && block.text) block.text.appendData(data.text);
    } else if (type === "input_json_delta") {
      const block = this.blocks.get(data.index);
      if (block && block.tool) {
        block.json += data.partial_json;
        block.tool.querySelector(".tool-input").textContent = block.json;
      }
    } else if (type === "content_block_stop") {
      const block = this.blocks.get(data.index);
      if (block && block.tool && block.json) {
        try {
          block.tool.querySelector(".tool-input").textContent = pretty(JSON.parse(block.json));
        } catch {
          /* left as streamed */
        }
      }
    } else if (type === "tool_result") {
      const node = this.transcript.querySelector(`[data-tool-use-id="${CSS.escape(data.tool_use_id)}"]`);
      if (node) setResult(node, data.content, data.is_error);
    } else if (type === "message_delta" && this.message) {
      this.message.dataset.usage = tokens(data.usage);
    }
    this.scrolled();
  }
}

// -- runs of a session ------------------------------------------------------------------------

async function runsView(id) {
  const [session, runs] = await Promise.all([api.call("GET", `/sessions/${id}`), api.all(`/sessions/${id}/runs`)]);
  const rows = runs.map((r) =>
    el(
      "tr",
      { "data-testid": "run-row", "data-run-id": r.id, "data-status": r.status },
      el("td", { text: r.id }),
      el("td", {}, el("span", { class: `badge ${r.status}`, text: r.status })),
      el("td", { text: String(r.steps) }),
      el("td", { text: tokens(r.usage) }),
      el("td", { text: duration(r) }),
      el("td", { text: r.error ? `${r.error.type}: ${r.error.message}` : "" }),
      el(
        "td",
        {},
        el(
          "ul",
          { class: "trace" },
          ...r.tool_calls.map((c) =>
            el("li", { class: c.is_error ? "failed" : "", text: `${c.name} · step ${c.step} · ${c.duration_ms} ms · ${c.output_bytes} B${c.is_error ? " · error" : ""}` }),
          ),
        ),
      ),
    ),
  );
  return el(
    "section",
    { class: "runs" },
    el("div", { class: "chat-head" }, el("h2", { text: `Runs of ${label(session)}` }), el("a", { href: `#/sessions/${id}`, text: "Back to the chat" })),
    el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { "data-testid": "runs-table" },
        el("thead", {}, el("tr", {}, ...["run", "status", "steps", "usage", "duration", "error", "tool calls"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows),
      ),
    ),
  );
}

// -- agents -----------------------------------------------------------------------------------

function jsonField(text, field, fallback) {
  if (!text.trim()) return fallback;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${field} is not valid JSON: ${err.message}`);
  }
}

async function agentsView(editId) {
  const agents = await api.all("/agents");
  const editing = editId ? agents.find((a) => a.id === editId) : null;
  const list = el(
    "ul",
    { class: "agent-list", "data-testid": "agent-list" },
    ...agents.map((a) =>
      el(
        "li",
        { "data-testid": "agent-item", "data-agent-id": a.id },
        el("a", { href: `#/agents/${a.id}`, text: a.name }),
        el("span", { class: "muted", text: ` ${a.provider}${a.model ? ` · ${a.model}` : ""}` }),
      ),
    ),
  );
  const a = editing || { name: "", provider: "scripted", model: "", system: "", tools: [], max_steps: 16, options: {} };
  const f = {
    name: el("input", { value: a.name, "data-testid": "agent-name", required: true }),
    provider: el("input", { value: a.provider, "data-testid": "agent-provider", list: "providers" }),
    model: el("input", { value: a.model || "", "data-testid": "agent-model" }),
    system: el("textarea", { rows: 4, "data-testid": "agent-system", value: a.system || "" }),
    tools: el("textarea", { rows: 3, "data-testid": "agent-tools", value: JSON.stringify(a.tools) }),
    max_steps: el("input", { type: "number", min: 1, value: a.max_steps, "data-testid": "agent-max-steps" }),
    options: el("textarea", { rows: 6, "data-testid": "agent-options", value: JSON.stringify(a.options, null, 2) }),
  };
  const save = el("button", { type: "submit", "data-testid": "agent-save", text: editing ? "Save agent" : "Create agent" });
  const form = el(
    "form",
    { class: "agent-form" },
    el("h3", { text: editing ? `Edit ${editing.name}` : "New agent" }),
    ...Object.entries(f).map(([name, input]) => el("label", {}, el("span", { text: name }), input)),
    el("datalist", { id: "providers" }, ...["anthropic", "openai", "echo", "scripted"].map((p) => el("option", { value: p }))),
    save,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const body = {
        name: f.name.value.trim(),
        provider: f.provider.value.trim(),
        model: f.model.value.trim() || null,
        system: f.system.value || null,
        tools: jsonField(f.tools.value, "tools", []),
        max_steps: Number(f.max_steps.value),
        options: jsonField(f.options.value, "options", {}),
      };
      const saved = editing ? await api.call("PUT", `/agents/${editing.id}`, body) : await api.call("POST", "/agents", body);
      clearError();
      await sidebar.loadAgents();
      // A new hash is shown by the hashchange listener; showing it here too raced two renders
      // of this view, and an edit made in the first could be lost with it.
      const target = `#/agents/${saved.id}`;
      if (location.hash === target) await show();
      else location.hash = target;
    });
  });
  return el("section", { class: "agents" }, el("div", { class: "chat-head" }, el("h2", { text: "Agents" }), el("a", { href: "#/agents", text: "New agent" })), list, form);
}

// -- routing ----------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  let m = /^\/sessions\/([^/]+)\/runs$/.exec(hash);
  if (m) return { view: "runs", session: decodeURIComponent(m[1]) };
  m = /^\/sessions\/([^/]+)$/.exec(hash);
  if (m) return { view: "chat", session: decodeURIComponent(m[1]) };
  m = /^\/agents(?:\/([^/]+))?$/.exec(hash);
  if (m) return { view: "agents", agent: m[1] ? decodeURIComponent(m[1]) : null };
  return { view: "home" };
}

let current = null;

async function show() {
  if (current) current.close();
  current = null;
  const where = route();
  const pane = $("#pane");
  document.body.classList.toggle("menu-open", where.view === "home");
  sidebar.shown = ""; // redraw the list's current mark
  await guarded(async () => {
    if (where.view === "chat") {
      const view = new ChatView(where.session);
      current = view;
      pane.replaceChildren(view.node);
      await view.load();
    } else if (where.view === "runs") {
      pane.replaceChildren(await runsView(where.session));
    } else if (where.view === "agents") {
      pane.replaceChildren(await agentsView(where.agent));
    } else {
      pane.replaceChildren(
        el("section", { class: "home" }, el("h2", { text: "Sessions" }), el("p", { text: "Pick a session on the left, or make a new one." })),
      );
    }
    sidebar.refresh().catch(() => {});
  });
}

async function start() {
  $("#new-form").addEventListener("submit", createSession);
  $("#import-file").addEventListener("change", importFile);
  let searching = null;
  $("#search-input").addEventListener("input", () => {
    clearTimeout(searching);
    searching = setTimeout(() => guarded(() => sidebar.refresh()), 200);
  });
  $("#show-archived").addEventListener("change", () => guarded(() => sidebar.refresh()));
  $("#error-close").addEventListener("click", clearError);
  $("#menu").addEventListener("click", () => document.body.classList.toggle("menu-open"));
  $("#forget-key").addEventListener("click", () => {
    api.forgetKey();
    location.reload();
  });
  $("#keybox").addEventListener("submit", async (event) => {
    event.preventDefault();
    api.keepKey($("#api-key").value.trim());
    $("#api-key").value = "";
    $("#keybox").hidden = true;
    clearError();
    await boot();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && current && current.active) {
      event.preventDefault();
      current.stop();
    }
  });
  window.addEventListener("hashchange", show);
  await boot();
}

async function boot() {
  $("#forget-key").hidden = !api.storedKey();
  const ok = await guarded(async () => {
    await sidebar.loadAgents();
    return true;
  });
  if (!ok) return;
  sidebar.poll();
  await show();
}

start();
