// Following one run's events with EventSource. The browser reconnects by itself after a drop,
// sending Last-Event-ID, and the server resumes after that event: no gap, nothing twice. When
// the stream cannot be reopened (its token expired, the server restarted), a fresh URL is
// asked for and opened after the last event seen. The stream ends with the run's last `done`.

export const EVENT_TYPES = [
  "message_start",
  "content_block_start",
  "text_delta",
  "input_json_delta",
  "content_block_stop",
  "message_delta",
  "message_stop",
  "tool_result",
  "requires_action",
  "error",
  "done",
];

// follow(url, onEvent, {freshUrl, onLost}) → {close()}. onEvent(type, data, seq) for every
// event; freshUrl() resolves to a new events URL of the same run (for an expired token).
export function follow(url, onEvent, options = {}) {
  let source = null;
  let last = null;
  let closed = false;
  let failures = 0;

  function open(at) {
    const target = last === null ? at : withPosition(at, last);
    source = new EventSource(target);
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        if (type === "error" && message.data === undefined) return; // the connection's own
        failures = 0;
        if (message.lastEventId) last = message.lastEventId;
        const data = JSON.parse(message.data);
        onEvent(type, data, last);
        // a run paused for client tools ends its stream with done (requires_action); the
        // browser reconnects and the stream goes on when the run resumes
        if (type === "done" && data.status !== "requires_action") stop();
      });
    }
    source.addEventListener("error", (event) => {
      if (event.data !== undefined || closed) return;
      if (source.readyState === EventSource.CLOSED) reopen();
    });
  }

  async function reopen() {
    source.close();
    failures += 1;
    if (failures > 5 || !options.freshUrl) {
      stop();
      if (options.onLost) options.onLost();
      return;
    }
    await new Promise((done) => setTimeout(done, 250 * failures));
    if (closed) return;
    try {
      open(await options.freshUrl());
    } catch (err) {
      stop();
      if (options.onLost) options.onLost(err);
    }
  }

  function stop() {
    closed = true;
    if (source) source.close();
  }

  open(url);
  return { close: stop };
}

function withPosition(url, position) {
  const parsed = new URL(url, location.href);
  parsed.searchParams.set("last_event_id", position);
  return parsed.pathname + parsed.search;
}
