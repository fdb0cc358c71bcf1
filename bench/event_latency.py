"""Event latency (snapshot built in the load thread → websocket client has it), the longest gap
between progress updates in the weights stage, and messages per load, with many clients.

    .venv/bin/python bench/event_latency.py [--clients 1,100,500] [--layers redis,memory]
        [--client raw|websockets|both] [--repeat N]

In-memory layer: one daphne. Redis layer: two daphne processes, clients split between them,
the load started on the first. The 1 GB checkpoint is read at a capped 200 MB/s so the weights
stage lasts ~5 s on any disk; a 1,800-tensor checkpoint checks that messages stay bounded.

What is timed. Every client runs in this one process, on the 2-core machine the server uses.
``--client raw`` (the default) times each frame by the kernel's receive stamp (``raw_viewers``):
on loopback that is when the server's ``send()`` handed it over, so the figure is the server's
alone, as a browser with one socket would see it. ``--client websockets`` is how the figures
before November 2026 were taken (``cpu-event_latency*.txt`` up to ``-after``): the ``websockets``
library's clients, timed when this process reads each frame, which adds the time it spends on
the other clients' frames and waiting for a core the server holds (at 500 clients p50 23-53 ms
against 4-9 ms for the same server stamped by the kernel; p99 +30-80 ms). The "read p99"
column is that user-space time for every kind of client, so the two can be compared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from typing import Any

from common import OUT, checkpoint
from raw_viewers import RawCrowd

from mactuner_dev.harness import REDIS_URL, Api, LiveServer, migrate, server_env

Inbox = list[tuple[float, float, Any]]  # (kernel receive time or NaN, time the bench read it, message)


async def client(port: int, inbox: Inbox, ready: asyncio.Event, done: asyncio.Event) -> None:
    """The ``websockets`` library's client (``--client websockets``, the way of the earlier figures)."""
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/ws/loader/", origin=f"http://127.0.0.1:{port}", max_queue=None) as ws:
        await ws.recv()
        ready.set()
        while not done.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            inbox.append((math.nan, time.time(), raw))  # parsed after the run: keep the client cheap


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


async def connect_clients(servers: list[LiveServer], n: int, kind: str) -> tuple[list[Inbox], Any]:
    """Open ``n`` viewers; returns their inboxes and what ``close_clients`` needs."""
    if kind == "raw":
        crowds = [
            await asyncio.to_thread(RawCrowd, s.port, len(range(i, n, len(servers)))) for i, s in enumerate(servers)
        ]
        inboxes: list[Inbox] = [v.frames for crowd in crowds for v in crowd.viewers]  # type: ignore[misc]
        while not all(inboxes):  # the state sent on connect (nothing else is sent before the load)
            await asyncio.sleep(0.05)
        for inbox in inboxes:
            inbox.clear()
        return inboxes, crowds
    inboxes = [[] for _ in range(n)]
    readies = [asyncio.Event() for _ in range(n)]
    done = asyncio.Event()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(client(servers[i % len(servers)].port, inboxes[i], readies[i], done)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    return inboxes, (done, tasks)


async def close_clients(kind: str, handle: Any) -> None:
    if kind == "raw":
        for crowd in handle:
            crowd.close()
        return
    done, tasks = handle
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_case(servers: list[LiveServer], n: int, model: str, kind: str) -> dict[str, float]:
    inboxes, handle = await connect_clients(servers, n, kind)
    api = Api(servers[0])
    status, body = await asyncio.to_thread(api.call, "POST", "/api/load", {"model": model, "device": "cpu"})
    assert status == 202, body
    job_id = body["job"]["id"]

    def finished(inbox: Inbox) -> bool:
        # The final snapshot is the last one a client gets for the job: look at the newest only,
        # and without parsing it (a cheap client measures the server, not itself).
        if not inbox:
            return False
        last = inbox[-1][2]
        if isinstance(last, bytes):
            last = last.decode()
        return f'"id": {job_id}, ' in last and '"active": false' in last

    deadline = time.monotonic() + 600
    while not all(finished(b) for b in inboxes) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    complete = all(finished(b) for b in inboxes)
    await close_clients(kind, handle)
    await asyncio.to_thread(api.call, "POST", "/api/unload")
    latencies, bench_side, gaps = [], [], []
    for inbox in inboxes:
        mine = [(k, u, m) for k, u, raw in inbox if ((m := json.loads(raw)).get("job") or {}).get("id") == job_id]
        # the server's figure: the kernel's stamp where there is one, else the bench's read time
        at = [(u if math.isnan(k) else k, m) for k, u, m in mine]
        latencies += [(t - m["emitted_at"]) * 1000 for t, m in at]
        bench_side += [(u - m["emitted_at"]) * 1000 for _k, u, m in mine]
        weights = [t for t, m in at if m["job"]["stage"] == "weights"]
        gaps += [b - a for a, b in zip(weights, weights[1:], strict=False)]
    first = [u for _k, u, raw in inboxes[0] if f'"id": {job_id}, ' in (raw if isinstance(raw, str) else raw.decode())]
    span = first[-1] - first[0] if len(first) > 1 else 0.0
    return {
        "p50": statistics.median(latencies), "p99": pct(latencies, 0.99), "read_p99": pct(bench_side, 0.99),
        "max_gap": max(gaps) if gaps else float("nan"), "messages": len(first),
        "rate": len(first) / span if span else float("nan"), "complete": complete,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="1,100,500")
    parser.add_argument("--layers", default="memory,redis")
    parser.add_argument("--client", default="raw", help="raw (kernel-stamped), websockets (the library), or both")
    parser.add_argument("--repeat", type=int, default=1, help="run every case this many times, interleaved")
    args = parser.parse_args()
    import django

    django.setup()  # ``wait_warm`` reads the start-up module's log line constant
    big = checkpoint("llama-500m-4", "500M", 4).name
    from mactuner_dev.synth import write_checkpoint

    many = OUT / "llama-many-tensors"
    if not (many / "config.json").exists():
        write_checkpoint(many, params=30_000_000, shards=8, layers=200, seed=5)
    kinds = ["raw", "websockets"] if args.client == "both" else [args.client]
    cases: list[tuple[str, int, str, str]] = [
        (layer, int(n), big, kind)
        for layer in args.layers.split(",")
        for n in args.clients.split(",")
        for kind in kinds
    ]
    cases.append(("memory", 1, many.name, kinds[0]))
    print(
        f"{'layer':7s} {'clients':>7s} {'client':10s} {'model':22s} {'p50 ms':>8s} {'p99 ms':>8s} {'read p99':>8s} {'max gap s':>9s} {'msgs':>5s} {'msgs/s':>7s}"
    )
    for _ in range(args.repeat):
        for layer, n, model, kind in cases:
            extra = {"MACTUNER_READ_LIMIT_MBPS": "200"}
            if layer == "redis":
                extra["REDIS_URL"] = REDIS_URL
            env = server_env(OUT, OUT / f"latency-{layer}.sqlite3", **extra)
            migrate(env)
            servers = [LiveServer(env).start().wait_warm() for _ in range(2 if layer == "redis" else 1)]
            try:
                r = asyncio.run(run_case(servers, n, model, kind))
            finally:
                for s in servers:
                    s.stop()
            flag = "" if r["complete"] else "  (some clients missed the end)"
            print(
                f"{layer:7s} {n:7d} {kind:10s} {model:22s} {r['p50']:8.1f} {r['p99']:8.1f} {r['read_p99']:8.1f} {r['max_gap']:9.2f} {r['messages']:5d} {r['rate']:7.1f}{flag}",
                flush=True,
            )


if __name__ == "__main__":
    main()
