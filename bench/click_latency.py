"""Click-to-first-progress latency in a real browser (Chromium), first load after start and later.

    .venv/bin/python bench/click_latency.py [--starts 5 --loads 20]

Measured in the page: from the Load click to the first server snapshot of the new job on
screen (the 202 reply or the websocket, whichever renders first), polled every 2 ms.
"""

from __future__ import annotations

import argparse
import statistics

from common import OUT, checkpoint

from mactuner_dev.harness import LiveServer, migrate, server_env

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip
MEASURE = """async (model) => {
  const prev = window.MACtuner.state.job ? window.MACtuner.state.job.id : null;
  document.getElementById('model-select').value = model;
  const t0 = performance.now();
  document.getElementById('load-btn').click();
  while (true) {
    const j = window.MACtuner.state.job;
    if (j && typeof j.id === 'number' && j.id !== prev) return performance.now() - t0;
    await new Promise(r => setTimeout(r, 2));
  }
}"""
IDLE = "() => !(window.MACtuner.state.job && (window.MACtuner.state.job.active || typeof window.MACtuner.state.job.id !== 'number'))"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    model = checkpoint("llama-20m-2", "20M", 2).name
    env = server_env(OUT, OUT / "click.sqlite3")
    migrate(env)
    first: list[float] = []
    later: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        for start in range(args.starts):
            server = LiveServer(env).start()
            try:
                page = browser.new_page()
                page.goto(server.url + "/")
                page.wait_for_function("() => window.MACtuner && window.MACtuner.modelsLoaded")
                first.append(page.evaluate(MEASURE, model))
                page.wait_for_function(IDLE, timeout=60_000)
                if start == 0:
                    for _ in range(args.loads):
                        later.append(page.evaluate(MEASURE, model))
                        page.wait_for_function(IDLE, timeout=60_000)
                page.close()
            finally:
                server.stop()
        browser.close()
    for label, values in (("first load after server start", first), ("later loads", later)):
        print(
            f"{label:30s} n={len(values):3d}  p50 {statistics.median(values):6.1f} ms  p99 {pct(values, 0.99):6.1f} ms  max {max(values):6.1f} ms"
        )


if __name__ == "__main__":
    main()
