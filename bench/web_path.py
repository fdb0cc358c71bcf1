"""Time to ready through the web path vs plain transformers vs `cat`, hot and cold cache.

    .venv/bin/python bench/web_path.py [--params 500M --shards 4 --runs 5]

(a) web: POST /api/load on a live daphne → load thread → websocket snapshot "succeeded";
(b) plain: AutoTokenizer + AutoModelForCausalLM.from_pretrained + one read per page of every
parameter, in this process; (c) `cat` of the shard files. Imports are warm on both sides and
every side unloads outside its timing. Runs interleave a, b, c; cold runs evict only the shard
files (posix_fadvise DONTNEED) before each run; hot runs start from one evict + sequential read
and `cat` the files before each run. After the server stops: the disk's cold positional read rate
with 1 and 4 threads (the parallel-read floor = bytes / the best rate), for web/floor.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import time
from datetime import datetime

from common import OUT, checkpoint, evict, read_rate, shard_files, timed, touch_all, warm

from mactuner_dev.harness import Api, LiveServer, SocketWatcher, job_of, migrate, server_env


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="500M")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from loader.pipeline.preflight import warm_imports

    warm_imports()
    import transformers

    transformers.utils.logging.disable_progress_bar()
    path = checkpoint(f"llama-{args.params.lower()}-{args.shards}", args.params, args.shards)
    size = sum(f.stat().st_size for f in shard_files(path))
    env = server_env(OUT, OUT / "bench.sqlite3")
    migrate(env)
    server = LiveServer(env).start()
    api, watcher = Api(server), SocketWatcher(server)
    watcher.next()

    first_bytes: list[float] = []

    def web() -> None:
        sent = time.time()
        status, body = api.call("POST", "/api/load", {"model": path.name, "device": args.device, "dtype": "auto"})
        assert status == 202, body
        job_id = body["job"]["id"]  # type: ignore[index]
        final = watcher.until(lambda m: job_of(m).get("id") == job_id and not job_of(m)["active"], timeout=600)
        job = job_of(final)
        assert job["state"] == "succeeded", final
        # The server's own clock (same machine): row created + "first_byte" after it, from our send.
        created = datetime.fromisoformat(job["created_at"]).timestamp()
        first_bytes.append(created + job["timings"]["first_byte"] - sent)

    def plain() -> None:
        transformers.AutoTokenizer.from_pretrained(str(path))
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype="auto", device_map=args.device)
        if args.device == "cpu":
            touch_all(model)
        else:
            import torch

            torch.cuda.synchronize()

    def cat() -> None:
        subprocess.run(["cat", *map(str, shard_files(path))], stdout=subprocess.DEVNULL, check=True)

    def unload() -> None:
        api.call("POST", "/api/unload")
        gc.collect()

    sides = {"web": web, "plain": plain, "cat": cat}
    try:
        web(), unload(), plain()  # first-load costs paid outside the timed runs
        # One state for "hot": every page read in by one sequential read. How pages came into the
        # cache (written, read, faulted, or partly reclaimed by the host's idle-page reclaim) changes
        # what faulting them into a process costs — plain's per-page touch 21 vs 82 ms for 1 GB here.
        evict(path)
        warm(path)
        report = {}
        for mode in ("hot", "cold"):
            times: dict[str, list[float]] = {k: [] for k in sides}
            for _ in range(args.runs):
                for name, fn in sides.items():
                    evict(path) if mode == "cold" else warm(path)
                    time.sleep(0.2)
                    times[name].append(timed(fn))
                    unload()
            report[mode] = times
    finally:
        watcher.close()
        server.stop()
    rates = {t: read_rate(path, t, cold=True) for t in (1, 4)}
    floor = size / 1e9 / max(rates.values())
    print(
        f"checkpoint: {path.name}, {size / 1e9:.2f} GB in {args.shards} shards, bf16, device {args.device}, best of {args.runs}"
    )
    start, ms = 1000 * first_bytes[0], sorted(1000 * t for t in first_bytes[1:])
    print(f"  POST sent -> first weights byte read: median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms "
          f"(n={len(ms)}, hot and cold); the untimed first load after the server start: {start:.1f} ms")  # fmt: skip
    print(f"  limits: cold positional reads {rates[1]:.2f} GB/s (1 thread), {rates[4]:.2f} GB/s (4 threads); "
          f"parallel-read floor {floor:.3f} s")  # fmt: skip
    for mode, times in report.items():
        best = {k: min(v) for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"  [{mode}] " + "  ".join(f"{k} {best[k]:.3f}s (median {med[k]:.3f})" for k in sides))
        print(f"  [{mode}] web/plain = {best['web'] / best['plain']:.3f} (medians {med['web'] / med['plain']:.3f})   "
              f"web/cat = {best['web'] / best['cat']:.3f} (medians {med['web'] / med['cat']:.3f})"
              + (f"   web/floor = {best['web'] / floor:.3f} (median {med['web'] / floor:.3f})" if mode == "cold" else ""))  # fmt: skip


if __name__ == "__main__":
    main()
