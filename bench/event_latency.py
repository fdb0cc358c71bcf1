"""Event latency (snapshot built in the load thread → websocket client has it), the longest gap
between progress updates in the weights stage, and messages per load, with many clients.

    .venv/bin/python bench/event_latency.py [--clients 1,100,500] [--layers redis,memory]

In-memory layer: one daphne. Redis layer: two daphne processes, clients split between them,
the load started on the first. The 1 GB checkpoint is read at a capped 200 MB/s so the weights
stage lasts ~5 s on any disk; a 1,800-tensor checkpoint checks that messages stay bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from common import OUT, checkpoint

from mactuner_dev.harness import REDIS_URL, Api, LiveServer, migrate, server_env


async def client(
    port: int, inbox: list[tuple[float, dict[str, Any]]], ready: asyncio.Event, done: asyncio.Event
) -> None:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/ws/loader/", origin=f"http://127.0.0.1:{port}", max_queue=None) as ws:
        await ws.recv()
        ready.set()
        while not done.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            inbox.append((time.time(), raw))  # parsed after the run: keep the client cheap


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


async def run_case(servers: list[LiveServer], n: int, model: str) -> dict[str, float]:
    inboxes: list[list[tuple[float, dict[str, Any]]]] = [[] for _ in range(n)]
    readies = [asyncio.Event() for _ in range(n)]
    done = asyncio.Event()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(client(servers[i % len(servers)].port, inboxes[i], readies[i], done)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    api = Api(servers[0])
    status, body = await asyncio.to_thread(api.call, "POST", "/api/load", {"model": model, "device": "cpu"})
    assert status == 202, body
    job_id = body["job"]["id"]

    def finished(inbox: list[tuple[float, Any]]) -> bool:
        # The final snapshot is the last one a client gets for the job: look at the newest only,
        # and without parsing it (a cheap client measures the server, not itself).
        if not inbox:
            return False
        last = inbox[-1][1]
        if isinstance(last, dict):
            job = last.get("job") or {}
            return job.get("id") == job_id and not job["active"]
        return f'"id": {job_id}, ' in last and '"active": false' in last

    deadline = time.monotonic() + 600
    while not all(finished(b) for b in inboxes) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(api.call, "POST", "/api/unload")
    for inbox in inboxes:
        inbox[:] = [(t, json.loads(raw) if isinstance(raw, str | bytes) else raw) for t, raw in inbox]
    latencies, gaps = [], []
    for inbox in inboxes:
        mine = [(t, m) for t, m in inbox if (m.get("job") or {}).get("id") == job_id]
        latencies += [(t - m["emitted_at"]) * 1000 for t, m in mine]
        weights = [t for t, m in mine if m["job"]["stage"] == "weights"]
        gaps += [b - a for a, b in zip(weights, weights[1:], strict=False)]
    first = [(t, m) for t, m in inboxes[0] if (m.get("job") or {}).get("id") == job_id]
    span = first[-1][0] - first[0][0] if len(first) > 1 else 0.0
    return {
        "p50": statistics.median(latencies), "p99": pct(latencies, 0.99), "max_gap": max(gaps) if gaps else float("nan"),
        "messages": len(first), "rate": len(first) / span if span else float("nan"), "complete": all(finished(b) for b in inboxes),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="1,100,500")
    parser.add_argument("--layers", default="memory,redis")
    args = parser.parse_args()
    big = checkpoint("llama-500m-4", "500M", 4).name
    from mactuner_dev.synth import write_checkpoint

    many = OUT / "llama-many-tensors"
    if not (many / "config.json").exists():
        write_checkpoint(many, params=30_000_000, shards=8, layers=200, seed=5)
    cases: list[tuple[str, int, str]] = [
        (layer, int(n), big) for layer in args.layers.split(",") for n in args.clients.split(",")
    ]
    cases.append(("memory", 1, many.name))
    print(
        f"{'layer':7s} {'clients':>7s} {'model':22s} {'p50 ms':>8s} {'p99 ms':>8s} {'max gap s':>9s} {'msgs':>5s} {'msgs/s':>7s}"
    )
    for layer, n, model in cases:
        extra = {"MACTUNER_READ_LIMIT_MBPS": "200"}
        if layer == "redis":
            extra["REDIS_URL"] = REDIS_URL
        env = server_env(OUT, OUT / f"latency-{layer}.sqlite3", **extra)
        migrate(env)
        servers = [LiveServer(env).start() for _ in range(2 if layer == "redis" else 1)]
        try:
            time.sleep(4)  # let the servers finish warming their imports
            r = asyncio.run(run_case(servers, n, model))
        finally:
            for s in servers:
                s.stop()
        flag = "" if r["complete"] else "  (some clients missed the end)"
        print(
            f"{layer:7s} {n:7d} {model:22s} {r['p50']:8.1f} {r['p99']:8.1f} {r['max_gap']:9.2f} {r['messages']:5d} {r['rate']:7.1f}{flag}",
            flush=True,
        )


if __name__ == "__main__":
    main()
