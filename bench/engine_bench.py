"""The weights engine against plain transformers, `cat` and the machine's limits, in one run.

    .venv/bin/python bench/engine_bench.py [--device cpu|cuda --params 500M --shards 4 --runs 3]

Sides, interleaved run by run, hot then cold (cold evicts only the shard files):
(a) ours: ``ModelSlot.load`` through every stage (CPU: weights resident; CUDA: on the GPU, synced);
(b) plain: AutoTokenizer + AutoModelForCausalLM.from_pretrained(dtype="auto", device_map=device)
    (+ one read per page on CPU, + synchronize on CUDA);
(c) `cat` of the shards to /dev/null.
Limits, measured in the same run: the disk's read rate after eviction with 1 and 4 threads
(pread in file order into a pre-faulted buffer), the page-cache read rate, and on CUDA pinned and
pageable host→device GB/s. Each ratio is printed beside the limit it is compared with.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import threading
import time

from common import checkpoint, evict, read_rate, shard_files, timed, touch_all, warm


def h2d_rates() -> tuple[float, float]:
    import torch

    n = 1 << 30
    dst = torch.empty(n, dtype=torch.uint8, device="cuda")
    rates = []
    for pinned in (True, False):
        src = torch.ones(n, dtype=torch.uint8, pin_memory=pinned)
        dst.copy_(src, non_blocking=pinned)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(3):
            dst.copy_(src, non_blocking=pinned)
        torch.cuda.synchronize()
        rates.append(3 * n / (time.perf_counter() - t0) / 1e9)
        del src
    del dst
    torch.cuda.empty_cache()
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--params", default="500M")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="hot,cold")
    args = parser.parse_args()

    from loader.pipeline import LoadRequest, ModelSlot
    from loader.pipeline.preflight import warm_imports

    warm_imports()
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    path = checkpoint(f"llama-{args.params.lower()}-{args.shards}", args.params, args.shards)
    size = sum(f.stat().st_size for f in shard_files(path))
    cuda = args.device == "cuda"
    slot = ModelSlot()
    last: dict[str, object] = {}

    def ours() -> None:
        events: list[object] = []
        loaded = slot.load(LoadRequest(path, device=args.device), events.append, threading.Event())
        weights = [e for e in events if e.stage.value == "weights"]  # type: ignore[attr-defined]
        d = weights[-1].detail  # type: ignore[attr-defined]
        last.update(engine=d.engine, cache=d.cache, prefetched=d.prefetched_bytes, staging=d.staging_bytes)
        last["timings"] = loaded.metadata["timings"]
        del loaded  # else the unload sees a live reference and pays a full gc
        slot.unload()

    def plain() -> None:
        transformers.AutoTokenizer.from_pretrained(str(path))
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype="auto", device_map=args.device)
        if cuda:
            torch.cuda.synchronize()
        else:
            touch_all(model)
        del model
        if cuda:
            torch.cuda.empty_cache()

    def cat() -> None:
        subprocess.run(["cat", *map(str, shard_files(path))], stdout=subprocess.DEVNULL, check=True)

    sides = {"ours": ours, "plain": plain, "cat": cat}
    ours(), plain()  # first-load costs (CUDA context, allocator, regex caches) outside the timed runs
    limits = {f"read_{mode}_{t}t": read_rate(path, t, mode == "cold") for mode in ("cold", "hot") for t in (1, 4)}
    if cuda:
        limits["h2d_pinned"], limits["h2d_pageable"] = h2d_rates()
    floor = size / 1e9 / max(limits["read_cold_1t"], limits["read_cold_4t"])
    where = torch.cuda.get_device_name(0) if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"checkpoint {path.name}: {size / 1e9:.2f} GB in {args.shards} shards, bf16; device {args.device}: {where}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}; best of {args.runs}, interleaved")
    print("limits: " + ", ".join(f"{k} {v:.2f} GB/s" for k, v in limits.items()))
    print(f"  cold parallel-read floor = {floor:.3f} s (bytes / best cold read rate)")
    for mode in args.modes.split(","):
        if mode == "hot":  # one page-cache state for "hot", as web_path.py (how pages came in changes
            evict(path)  # what faulting them costs plain: after the 4-thread reads above, 2× more)
            warm(path)
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.runs):
            for name, fn in sides.items():
                evict(path) if mode == "cold" else warm(path)
                times[name].append(timed(fn))
        best = {k: min(v) for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"[{mode}] "
            + "  ".join(f"{k} {best[k]:.3f}s (runs {', '.join(f'{t:.3f}' for t in v)})" for k, v in times.items())
        )
        print(
            f"[{mode}] ours/plain {best['ours'] / best['plain']:.3f} (medians {med['ours'] / med['plain']:.3f})  "
            f"ours/cat {best['ours'] / best['cat']:.3f}  ours/floor {best['ours'] / floor:.3f}  "
            f"ours {size / 1e9 / best['ours']:.2f} GB/s"
        )  # fmt: skip
        print(f"[{mode}] last load: {last}")
    if cuda:
        slot.unload()
        print(f"after unload: allocated {torch.cuda.memory_allocated()} B, reserved {torch.cuda.memory_reserved()} B")


if __name__ == "__main__":
    main()
