"""CUDA checks of the staged loader, for a machine with an NVIDIA GPU (run by bench/device_run.sh).

Prints PASS/FAIL lines: device stage measured between 85 and 90 %, metadata says cuda, the
weights live on the GPU, unload and cancel-during-the-move give the GPU memory back, and a
load after a cancel works.
"""

from __future__ import annotations

import threading
import time

from common import checkpoint


def main() -> None:
    import torch

    from loader.pipeline import LoadCancelled, LoadRequest, ModelSlot, Stage
    from loader.pipeline.preflight import warm_imports

    warm_imports()
    print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
    path = checkpoint("llama-500m-4", "500M", 4)
    slot = ModelSlot()
    events: list[tuple[float, object]] = []
    t0 = time.perf_counter()
    loaded = slot.load(
        LoadRequest(path, device="auto"), lambda e: events.append((time.perf_counter() - t0, e)), threading.Event()
    )
    ok = lambda cond, what: print(("PASS " if cond else "FAIL ") + what, flush=True)  # noqa: E731
    ok(loaded.device == "cuda", f"auto picked {loaded.device}")
    ok(all(p.device.type == "cuda" for p in loaded.model.parameters()), "every parameter is on the GPU")
    dev = [e for _, e in events if e.stage is Stage.DEVICE]
    ok(dev[0].percent == 85 and dev[-1].percent == 90, f"device stage spans 85->90 ({len(dev)} events)")
    ok("CUDA" in dev[0].message, f"device message: {dev[0].message}")
    percents = [e.percent for _, e in events]
    ok(percents == sorted(percents) and percents[-1] == 100, "percent monotonic to 100")
    allocated = torch.cuda.memory_allocated()
    ok(
        allocated >= loaded.metadata["memory_bytes"] * 0.95,
        f"GPU holds the weights: {allocated / 1e9:.2f} GB allocated",
    )
    print("timings", loaded.metadata["timings"])
    print("metadata", {k: loaded.metadata[k] for k in ("device", "dtype", "memory_bytes", "parameters")})
    del loaded
    slot.unload()
    ok(
        torch.cuda.memory_allocated() < 16 * 1024 * 1024,
        f"unload frees the GPU: {torch.cuda.memory_allocated()} bytes left",
    )

    cancel = threading.Event()

    def cancel_in_move(event: object) -> None:
        if event.stage is Stage.DEVICE:  # type: ignore[attr-defined]
            cancel.set()

    try:
        slot.load(LoadRequest(path, device="cuda"), cancel_in_move, cancel)
        ok(False, "cancel during the device move raised LoadCancelled (the move finished first)")
    except LoadCancelled:
        ok(True, "cancel during the device move raised LoadCancelled")
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    ok(
        slot.loaded is None and torch.cuda.memory_allocated() < 16 * 1024 * 1024,
        f"cancel frees the GPU: {torch.cuda.memory_allocated()} bytes left",
    )
    again = slot.load(LoadRequest(path, device="cuda", dtype="float16"), lambda e: None, threading.Event())
    ok(again.dtype == "float16" and again.device == "cuda", "a load after the cancel works (float16 on cuda)")


if __name__ == "__main__":
    main()
