"""A crowd of websocket viewers that never read: `/api/status` latency and load time with 0, 300
and 1,500 of them (issue #10, item 7), side by side in one run.

    .venv/bin/python bench/crowd.py [--crowds 0,300,1500] [--loads 3] [--read-limit MBPS]

Each case gets a fresh daphne on SQLite with the in-memory layer. The non-reading viewers are raw
sockets (4 KB receive buffer) that complete the websocket handshake and then never read a byte.
One reading viewer times each load: POST /api/load → its final snapshot. A second client asks
`/api/status` back to back for the whole case (during the loads and between them). The checkpoint
is the ~60M-parameter generated one (4 shards, bf16), read from the page cache or, with
``--read-limit``, at a capped rate (a disk-bound load of about a second, as in the issue).
Columns: load s = POST → the reader's final snapshot (median); in server s = the job's own
``timings.total``; final ms = final snapshot emitted → received by the reader.
Goal: status p50 ≤ 50 ms, and at 1,500 the load time ≤ 1.2× the quiet one.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import threading
import time

from common import OUT, checkpoint

from mactuner_dev.harness import Api, LiveServer, SocketWatcher, job_of, migrate, open_silent, server_env


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


class StatusSampler(threading.Thread):
    """Back-to-back GET /api/status on one keep-alive connection, latency in ms."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, threading.Event()
        self.samples: list[float] = []
        self.failures = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/api/status")
                res = conn.getresponse()
                res.read()
                if res.status == 200:
                    self.samples.append((time.perf_counter() - t0) * 1000)
                else:
                    self.failures += 1
            except (OSError, http.client.HTTPException):
                self.failures += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            time.sleep(0.02)
        conn.close()


def run_case(model: str, n: int, loads: int, read_limit: str) -> dict[str, float]:
    env = server_env(OUT, OUT / f"crowd-{n}.sqlite3", MACTUNER_READ_LIMIT_MBPS=read_limit)
    migrate(env)
    server = LiveServer(env).start()
    try:
        time.sleep(4)  # let the server finish warming torch/transformers
        api = Api(server)
        crowd = open_silent(server.port, n)
        watcher = SocketWatcher(server)
        watcher.next()
        time.sleep(1)
        sampler = StatusSampler(server.port)
        sampler.start()
        times, inside, delivery = [], [], []
        for _ in range(loads):
            t0 = time.perf_counter()
            status, body = api.call("POST", "/api/load", {"model": model, "device": "cpu"})
            assert status == 202, body
            job_id = body["job"]["id"]  # type: ignore[index]
            final = watcher.until(lambda m, j=job_id: job_of(m).get("id") == j and not job_of(m)["active"], 300)
            times.append(time.perf_counter() - t0)
            assert job_of(final)["state"] == "succeeded", job_of(final)
            inside.append(job_of(final)["timings"]["total"])  # type: ignore[index]
            delivery.append((time.time() - time.monotonic() + final["_received"] - final["emitted_at"]) * 1000)  # type: ignore[operator]
        sampler.stop.set()
        sampler.join()
        closed = sum(_closed_by_server(s) for s in crowd)
        watcher.close()
        for s in crowd:
            s.close()
    finally:
        server.stop()
    return {
        "load": statistics.median(times), "inside": statistics.median(inside), "delivery": statistics.median(delivery),
        "p50": statistics.median(sampler.samples),
        "p99": pct(sampler.samples, 0.99), "max": max(sampler.samples), "n_status": len(sampler.samples),
        "failures": sampler.failures, "closed": closed,
    }  # fmt: skip


def _closed_by_server(s: socket.socket) -> bool:
    """Drain what the socket holds; True once the server has closed it (EOF or reset)."""
    s.setblocking(False)
    try:
        while True:
            if not s.recv(1 << 16):
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--crowds", default="0,300,1500")
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--read-limit", default="0", help="MB/s for the shard reads (0: page-cache speed)")
    args = parser.parse_args()
    model = checkpoint("crowd-medium-60m", "60M", 4).name
    print(
        f"{'non-readers':>11s} {'load s':>7s} {'×quiet':>7s} {'in server s':>11s} {'final ms':>8s}"
        f" {'status p50 ms':>13s} {'p99 ms':>8s} {'max ms':>8s} {'n':>5s} {'dropped':>9s}"
    )
    quiet = None
    for n in (int(x) for x in args.crowds.split(",")):
        r = run_case(model, n, args.loads, args.read_limit)
        quiet = quiet or r["load"]
        print(
            f"{n:11d} {r['load']:7.2f} {r['load'] / quiet:7.2f} {r['inside']:11.3f} {r['delivery']:8.1f}"
            f" {r['p50']:13.1f} {r['p99']:8.1f} {r['max']:8.1f} {r['n_status']:5d} {r['closed']:4d}/{n:<4d}"
            + (f"  ({r['failures']} status failures)" if r["failures"] else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
