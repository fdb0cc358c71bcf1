"""Peak RSS during a load against the checkpoint size, and RSS after unload over 10 cycles.

    .venv/bin/python bench/memory.py [--params 500M --shards 4 --cycles 10]

RSS is sampled every 5 ms by a thread while the pipeline loads (CPU, bf16 as stored). The
baseline is this process after the heavy imports, before the first load.
"""

from __future__ import annotations

import argparse
import threading
import time

import psutil
from common import checkpoint, shard_files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="500M")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    from loader.pipeline import LoadRequest, ModelSlot
    from loader.pipeline.preflight import warm_imports

    warm_imports()
    path = checkpoint(f"llama-{args.params.lower()}-{args.shards}", args.params, args.shards)
    size = sum(f.stat().st_size for f in shard_files(path))
    proc = psutil.Process()
    slot = ModelSlot()
    baseline = proc.memory_info().rss
    peaks, after = [], []
    for _cycle in range(args.cycles):
        peak = [proc.memory_info().rss]
        done = threading.Event()

        def sample(peak: list[int] = peak, done: threading.Event = done) -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        slot.load(LoadRequest(path), lambda e: None, threading.Event())
        done.set()
        sampler.join()
        peaks.append(peak[0])
        slot.unload()
        after.append(proc.memory_info().rss)
    mb = 1e6
    print(f"checkpoint {path.name}: {size / mb:.0f} MB; process baseline {baseline / mb:.0f} MB")
    print(
        f"peak RSS during load: max {max(peaks) / mb:.0f} MB -> (peak - baseline) / checkpoint = {(max(peaks) - baseline) / size:.3f} (goal <= 1.1)"
    )
    print("RSS after unload per cycle (MB): " + ", ".join(f"{a / mb:.0f}" for a in after))
    drift = (after[-1] - after[0]) / after[0]
    print(f"after-unload RSS, last vs first cycle: {drift * 100:+.2f} % (goal within 5 %)")


if __name__ == "__main__":
    main()
