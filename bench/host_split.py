"""The model-host split, measured from outside: start-up, web memory, the server during a hog,
cancel by kill, peak memory of a load, and the host's wire.

    .venv/bin/python bench/host_split.py [--params 500M --shards 4]

(1) daphne spawned -> first 200 of "/"; the web process's RSS and whether libtorch is mapped,
before and after a load of the checkpoint; (2) peak RSS of web + host during that load, against
the checkpoint's bytes; (3) GET /api/status latency (p50/p99 of 200 sequential calls) while the
host is stuck in a catastrophic regex (an adapter's ``target_modules``), then POST /api/cancel ->
the websocket's "cancelled" and whether the hog's memory went back (its process gone); (4) the
wire: progress frames per second over the host's socket pair, and host event -> job thread
latency (the frame's ``sent_at`` against its arrival) during a real load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from pathlib import Path

import psutil
from common import OUT, checkpoint, shard_files

from mactuner_dev import layouts
from mactuner_dev.harness import Api, LiveServer, SocketWatcher, job_of, migrate, server_env
from mactuner_dev.synth import write_checkpoint


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def host_of(pid: int) -> psutil.Process | None:
    for child in psutil.Process(pid).children():
        if "loader.host" in " ".join(child.cmdline()):
            return child
    return None


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


def hog_adapter(root: Path) -> None:
    base = root / "hog-base"
    if not base.exists():
        write_checkpoint(base, params=4_000_000, shards=1, seed=1)
    hog = root / "regex-hog"
    if not hog.exists():
        layouts.write_lora(hog, base, "hog-base")
        config = json.loads((hog / "adapter_config.json").read_text())
        config["target_modules"] = "(.*.*.*.*.*.*.*.*.*.*.*.*.*.*)*XYZ"
        (hog / "adapter_config.json").write_text(json.dumps(config))


def wire_rate() -> None:
    import socket

    from loader.host import protocol

    a, b = socket.socketpair()
    event = {"t": "event", "id": 1, "event": {"stage": "weights", "percent": 50.0, "message": "체크포인트 샤드 로드 중...",
             "detail": {"shard": 2, "shards": 4, "bytes_done": 123456789, "bytes_total": 999999999, "bytes_per_s": 1.5e9,
                        "eta_s": 0.4, "engine": "stream", "engine_reason": "", "prefetched_bytes": 0, "cache": "hot",
                        "staging_bytes": 0}, "timings": {"preparing": 0.1, "tokenizer": 0.02}}, "sent_at": 0.0}  # fmt: skip
    n = 50_000
    got = [0]

    def read() -> None:
        for _ in range(n):
            protocol.receive(b)
            got[0] += 1

    reader = threading.Thread(target=read)
    started = time.perf_counter()
    reader.start()
    for _ in range(n):
        protocol.send(a, event)
    reader.join()
    took = time.perf_counter() - started
    print(f"  wire: {n / took:,.0f} progress frames/s ({len(protocol.encode(event))} bytes each) over a socket pair")


def wire_latency(path: Path) -> None:
    from loader.host.supervisor import Host

    host = Host()
    host.start().ready.wait(300)
    lags: list[float] = []
    original = host._deliver

    def deliver(process: object, message: dict[str, object], nbytes: int) -> None:
        if message.get("t") == "event" and isinstance(message.get("sent_at"), float):
            lags.append(time.time() - message["sent_at"])  # type: ignore[operator]
        original(process, message, nbytes)  # type: ignore[arg-type]

    host._deliver = deliver  # type: ignore[method-assign]
    spec = {"path": str(path), "device": "cpu", "dtype": "auto", "name": path.name, "read_limit_bps": 400e6}
    host.load(1, spec, on_event=lambda e: None, on_dropped=lambda: None, on_waiting=lambda s: None,
              should_cancel=lambda: False, grace_s=2)  # fmt: skip
    host.stop()
    ms = [1000 * x for x in lags]
    print(f"  wire: host event -> job thread {statistics.median(ms):.2f} ms p50, {pct(ms, 0.99):.2f} ms p99 "
          f"(n={len(ms)}, a {path.name} load capped at 400 MB/s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="500M")
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    path = checkpoint(f"llama-{args.params.lower()}-{args.shards}", args.params, args.shards)
    size = sum(f.stat().st_size for f in shard_files(path))
    hog_adapter(OUT)
    env = server_env(OUT, OUT / "bench-split.sqlite3")
    migrate(env)
    print(f"checkpoint: {path.name}, {size / 1e9:.2f} GB in {args.shards} shards; {psutil.cpu_count()} CPUs")

    started = time.monotonic()
    server = LiveServer(env).start()
    api = Api(server)
    while api.call("GET", "/")[0] != 200:
        time.sleep(0.01)
    print(f"  spawn -> first page: {time.monotonic() - started:.2f} s")
    server.wait_warm(300)
    print(f"  spawn -> model host ready (imports done): {time.monotonic() - started:.2f} s")
    web = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
    before = web.memory_info().rss
    watcher = SocketWatcher(server)
    watcher.next()
    try:
        peak = [tree_rss(web.pid)]
        idle = peak[0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak.append(tree_rss(web.pid))

        threading.Thread(target=sample, daemon=True).start()
        status, body = api.call("POST", "/api/load", {"model": path.name, "device": "cpu"})
        job_id = body["job"]["id"]  # type: ignore[index]
        final = job_of(watcher.until(lambda m: job_of(m).get("id") == job_id and not job_of(m)["active"], timeout=600))
        done.set()
        assert final["state"] == "succeeded", final
        after = web.memory_info().rss
        maps = Path(f"/proc/{web.pid}/maps").read_text()
        print(f"  web RSS before {before / 1e6:.0f} MB, after the load {after / 1e6:.0f} MB; libtorch mapped in web: "
              f"{'libtorch' in maps}")  # fmt: skip
        print(f"  peak RSS web + host during the load {max(peak) / 1e9:.2f} GB; over the idle pair "
              f"{(max(peak) - idle) / 1e9:.2f} GB = {(max(peak) - idle) / size:.3f}x the checkpoint")  # fmt: skip
        api.call("POST", "/api/unload")

        def status_latency() -> list[float]:
            lat = []
            for _ in range(200):
                t0 = time.perf_counter()
                assert api.call("GET", "/api/status")[0] == 200
                lat.append(1000 * (time.perf_counter() - t0))
            return lat

        idle_lat = status_latency()
        print(f"  GET /api/status, idle server (same run): p50 {statistics.median(idle_lat):.1f} ms, "
              f"p99 {pct(idle_lat, 0.99):.1f} ms (n=200)")  # fmt: skip
        status, body = api.call("POST", "/api/load", {"model": "regex-hog", "device": "cpu"})
        assert status == 202, body
        hog = host_of(web.pid)
        assert hog is not None
        while hog.cpu_percent(0.2) < 50:
            pass
        lat = status_latency()
        print(f"  GET /api/status while the host is stuck in a regex: p50 {statistics.median(lat):.1f} ms, "
              f"p99 {pct(lat, 0.99):.1f} ms (n=200)")  # fmt: skip
        hog_rss = hog.memory_info().rss
        t0 = time.monotonic()
        job_id = api.call("POST", "/api/cancel")[1]["job"]["id"]  # type: ignore[index]
        final = job_of(watcher.until(lambda m: job_of(m).get("id") == job_id and not job_of(m)["active"], timeout=60))
        took = time.monotonic() - t0
        gone = not psutil.pid_exists(hog.pid)
        print(f"  cancel -> '{final['state']}' ({(final.get('error') or {}).get('code')}) on the socket: {took:.2f} s; "
              f"the hog's process ({hog_rss / 1e6:.0f} MB) gone: {gone}")  # fmt: skip
    finally:
        watcher.close()
        server.stop()
    wire_rate()
    wire_latency(path)


if __name__ == "__main__":
    main()
