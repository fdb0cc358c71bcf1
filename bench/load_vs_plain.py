"""Our full CPU load (to resident weights) vs plain transformers vs `cat` of the shards.

    .venv/bin/python bench/load_vs_plain.py [--params 500M --shards 4 --runs 5 --cold]

Prints best-of-N seconds for (a) ours: ModelSlot.load through every stage, (b) plain:
AutoTokenizer + AutoModelForCausalLM.from_pretrained + one read per page of every parameter,
(c) `cat` of the shard files to /dev/null; then a/b and a/c. Runs interleave a, b, c so drift
hits all three alike. Imports are warmed first and excluded from every side.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import threading

from common import checkpoint, evict, shard_files, timed, touch_all, warm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="500M")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="evict the shard files before every run")
    args = parser.parse_args()

    from loader.pipeline import LoadRequest, ModelSlot
    from loader.pipeline.preflight import warm_imports

    warm_imports()
    import transformers

    transformers.utils.logging.disable_progress_bar()  # our hook still sees the weights loop
    path = checkpoint(f"llama-{args.params.lower()}-{args.shards}", args.params, args.shards)
    size = sum(f.stat().st_size for f in shard_files(path))
    slot = ModelSlot()

    def ours() -> None:
        slot.load(LoadRequest(path), lambda e: None, threading.Event())
        slot.unload()

    def plain() -> None:
        transformers.AutoTokenizer.from_pretrained(str(path))
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype="auto")
        touch_all(model)

    def cat() -> None:
        subprocess.run(["cat", *map(str, shard_files(path))], stdout=subprocess.DEVNULL, check=True)

    sides = {"ours": ours, "plain": plain, "cat": cat}
    times: dict[str, list[float]] = {k: [] for k in sides}
    ours()  # first-load costs (regex caches, allocator) are paid by neither side's timed runs
    plain()
    for _ in range(args.runs):
        for name, fn in sides.items():
            evict(path) if args.cold else warm(path)
            times[name].append(timed(fn))
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    mode = "cold" if args.cold else "hot"
    print(
        f"checkpoint: {path.name}, {size / 1e9:.2f} GB in {args.shards} shards, bf16, CPU, {mode} cache, best of {args.runs}"
    )
    for name in sides:
        print(f"  {name:6s} {best[name]:7.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times[name])})")
    print(f"  ours/plain = {best['ours'] / best['plain']:.3f}  (medians: {median['ours'] / median['plain']:.3f})")
    print(f"  ours/cat   = {best['ours'] / best['cat']:.3f}  (medians: {median['ours'] / median['cat']:.3f})")


if __name__ == "__main__":
    main()
