"""9. The web console: from `send` to the first token painted.

A real Chromium (the system's, driven headless by Playwright, as the tests drive it) opens the
console on a session of a zero-latency scripted agent (a two-word reply) and sends 20
messages, one after the other. For each, a script in the page takes the time of the click,
watches the transcript with a MutationObserver for the new reply's first text, and takes the
time of the next animation frame after it: the frame that paints that text. It then waits
until the run's usage line is shown (the reply is done and the view has re-read the session)
before the next message. The figure is the median over the 20; p90 beside it.

There is no baseline: the target is absolute (under 50 ms). Without Playwright or Chromium
the scenario says so and produces no figures.
"""

from __future__ import annotations

import shutil
import statistics

from bench import workload
from bench.harness import Api, Context
from bench.report import Figure, Result, percentile

NAME = "console"
TITLE = "web console: send to first token painted, in Chromium"
BUDGET_S = 90.0
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

MEASURE = """async (count) => {
  const times = [];
  const q = (s) => document.querySelectorAll(s);
  for (let i = 0; i < count; i++) {
    const replies = q('[data-testid="message"][data-role="assistant"]').length;
    const done = q('[data-testid="run-usage"]').length;
    const painted = new Promise((resolve) => {
      let t0 = 0;
      const seen = () => {
        const now = q('[data-testid="message"][data-role="assistant"]');
        return now.length > replies && now[replies].textContent.length > 0;
      };
      const observer = new MutationObserver(() => {
        if (!seen()) return;
        observer.disconnect();
        requestAnimationFrame(() => resolve(performance.now() - t0));
      });
      observer.observe(document.querySelector('[data-testid="transcript"]'),
                       { childList: true, subtree: true, characterData: true });
      document.querySelector('[data-testid="message-input"]').value = "go " + i;
      t0 = performance.now();
      document.querySelector('[data-testid="send"]').click();
    });
    times.push(await painted);
    while (q('[data-testid="run-usage"]').length <= done) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  return times;
}"""


async def run(ctx: Context, result: Result) -> None:
    chromium = shutil.which("chromium")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        result.failed = "playwright is not installed (the test extras have it)"
        return
    if chromium is None:
        result.failed = "chromium is not installed (Debian package chromium)"
        return
    count = ctx.size(20, 3)
    server = await ctx.sessiond()
    api = Api(server.port)
    agent = await api.agent(workload.scripted_agent("console", 2))
    (session,) = await api.sessions(agent, 1)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"http://127.0.0.1:{server.port}/#/sessions/{session}")
            await page.get_by_test_id("message-input").wait_for()
            await page.evaluate(MEASURE, 1)  # warm-up: modules compiled, connection open
            times: list[float] = await page.evaluate(MEASURE, count)
        finally:
            await browser.close()
    await ctx.stop(server)
    result.errors += errors
    result.details["first_token_painted_ms"] = times
    middle = statistics.median(times)
    result.add(
        Figure("send to first token painted", middle, "ms", target="< 50 ms", ok=middle < 50)
    )
    result.add(Figure("p90", percentile(times, 90), "ms"))
