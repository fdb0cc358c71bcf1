"""How long the model list takes with many folders: 5,000 ``checkpoint-N`` of one Trainer run,
and 200 models (a few broken ones among them), the catalog as ``GET /api/models`` describes it.

    .venv/bin/python bench/list_time.py [--checkpoints 5000 --models 200 --runs 5]

Each folder holds a real ``config.json``, ``trainer_state.json`` (checkpoints) and a small
``model.safetensors`` (the list stats weights, never reads them). Timed: ``describe_all()`` with
the page cache warm (the second call onwards); printed best and median of the runs. Also timed:
the server watcher's look at the folders every 2 s (``catalog_check``), which pushes a new
checkpoint to open pages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16"}


def folder(path: Path, step: int | None = None) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(CONFIG))
    (path / "model.safetensors").write_bytes(b"\0" * 64)
    if step is not None:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def timed_list(models: Path, runs: int) -> tuple[float, float, int]:
    import django
    from django.conf import settings

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mactuner_site.settings")
    django.setup()
    settings.MACTUNER_MODELS_DIR = models
    settings.MACTUNER_HF_CACHE = models / ".no-cache"
    from loader.catalog.listing import describe_all

    count = len(describe_all())
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        describe_all()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times), count


def timed_watch(runs: int) -> tuple[float, float]:
    """The watcher's look every 2 s (``catalog_check``: the roots' fingerprint, stats only) on the
    roots ``timed_list`` just set: what an open page costs the server while nothing changes."""
    from loader.catalog.changes import catalog_check

    catalog_check()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        catalog_check()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", type=int, default=5000)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mactuner-list-") as tmp:
        runs, many = Path(tmp) / "runs", Path(tmp) / "many"
        for n in range(1, args.checkpoints + 1):
            folder(runs / "run" / f"checkpoint-{n * 10}", step=n * 10)
        for n in range(args.models):
            folder(many / f"model-{n:03d}")
        (many / "empty").mkdir()
        (many / "notes").mkdir()
        (many / "notes" / "README.md").write_text("x")
        for label, root in ((f"{args.checkpoints} checkpoint-N of one run", runs), (f"{args.models} models", many)):
            best, median, count = timed_list(root, args.runs)
            print(f"{label}: {count} listed, describe_all best {best * 1000:.1f} ms, median {median * 1000:.1f} ms "
                  f"({best / max(count, 1) * 1e6:.0f} µs per entry)")  # fmt: skip
            best, median = timed_watch(args.runs)
            print(f"{label}: the watcher's look (every 2 s) best {best * 1000:.1f} ms, median {median * 1000:.1f} ms")


if __name__ == "__main__":
    main()
