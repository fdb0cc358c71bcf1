"""The first socket message of a load clicked soon after the server starts, while it warms its imports.

    .venv/bin/python bench/first_message.py [--delays 0.2,0.4,0.7,1,1.5,2,2.5,3] [--starts 3]

For every delay and start: a fresh daphne, one websocket viewer (kernel-stamped, ``raw_viewers``)
and the page's request (``GET /``) as soon as the port opens, then ``POST /api/load`` of a small
checkpoint that many seconds after start. Printed: the 202 reply and the viewer's first frame of
the new job, both from the moment the POST was sent. The imports take ~4 s after start here, so
the delays cover their whole span; ``click_latency.py`` measures the same in Chromium, at the
one moment its page happens to be ready.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import OUT, checkpoint
from raw_viewers import RawCrowd

from mactuner_dev.harness import Api, LiveServer, migrate, server_env


def once(env: dict[str, str], model: str, delay: float) -> tuple[float, float]:
    server = LiveServer(env).start()
    started = time.time()
    crowd = None
    try:
        crowd = RawCrowd(server.port, 1)
        api = Api(server)
        time.sleep(max(0.0, started + delay - time.time()))
        sent = time.time()
        status, body = api.call("POST", "/api/load", {"model": model, "device": "cpu"})
        replied = time.time()
        assert status == 202, body
        key = f'"id": {body["job"]["id"]}, '.encode()
        frames = crowd.viewers[0].frames
        deadline = time.monotonic() + 30
        while not any(key in f[2] for f in frames) and time.monotonic() < deadline:
            time.sleep(0.005)
        first = next((stamp for stamp, _read, raw in frames if key in raw), float("nan"))
        api.wait_idle(120)
        return (replied - sent) * 1000, (first - sent) * 1000
    finally:
        if crowd is not None:
            crowd.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delays", default="0.2,0.4,0.7,1,1.5,2,2.5,3")
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    model = checkpoint("llama-20m-2", "20M", 2).name
    env = server_env(OUT, OUT / "first-message.sqlite3")
    migrate(env)
    delays = [float(d) for d in args.delays.split(",")]
    firsts: list[float] = []
    print(f"{'start':>5s} " + " ".join(f"{d:>9.1f}s" for d in delays) + "   (reply / first frame, ms)")
    for start in range(args.starts):
        row = []
        for delay in delays:
            reply, first = once(env, model, delay)
            firsts.append(first)
            row.append(f"{reply:4.0f}/{first:4.0f}")
        print(f"{start:5d} " + " ".join(f"{cell:>10s}" for cell in row), flush=True)
    firsts.sort()
    print(
        f"first frame: n={len(firsts)} p50 {statistics.median(firsts):.0f} ms, p90 {firsts[int(0.9 * (len(firsts) - 1))]:.0f} ms, "
        f"max {firsts[-1]:.0f} ms, over 100 ms: {sum(f > 100 for f in firsts)}"
    )


if __name__ == "__main__":
    main()
