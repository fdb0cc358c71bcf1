"""Real loads of generated checkpoints through the pure-Python pipeline."""

from __future__ import annotations

import gc
import json
import sys
import threading
import weakref
from pathlib import Path

import pytest

from loader.pipeline import LoadCancelled, LoadRequest, ModelSlot, ProgressEvent, Stage


def load(slot: ModelSlot, path: Path, cancel: threading.Event | None = None, **kw: object) -> list[ProgressEvent]:
    events: list[ProgressEvent] = []
    slot.load(LoadRequest(path, **kw), events.append, cancel or threading.Event())
    return events


def test_stage_boundaries_are_the_products_percentages(models_root: Path) -> None:
    events = load(ModelSlot(), models_root / "tiny")
    stages = [e.stage for e in events]
    assert stages[0] is Stage.PREPARING and stages[-1] is Stage.DONE
    order = list(dict.fromkeys(stages))
    assert order == [
        Stage.PREPARING,
        Stage.TOKENIZER,
        Stage.CONFIG,
        Stage.WEIGHTS,
        Stage.DEVICE,
        Stage.METADATA,
        Stage.DONE,
    ]
    last_of = {e.stage: e.percent for e in events}
    assert (last_of[Stage.TOKENIZER], last_of[Stage.CONFIG], last_of[Stage.WEIGHTS]) == (25, 40, 85)
    assert (last_of[Stage.DEVICE], last_of[Stage.METADATA], last_of[Stage.DONE]) == (90, 95, 100)
    assert events[-1].message == "✅ 모델 로드 완료!"


def test_percent_never_goes_backwards_and_shards_reach_n_of_n(models_root: Path) -> None:
    # A read-rate cap stretches the hot-cache load to ~1 s so intermediate events exist.
    events = load(ModelSlot(), models_root / "medium", device="cpu", read_limit_bps=150e6)
    percents = [e.percent for e in events]
    assert percents == sorted(percents)
    weights = [e for e in events if e.stage is Stage.WEIGHTS]
    assert len(weights) >= 3, "the weights stage must report progress between 40 and 85"
    assert any(40 < e.percent < 85 for e in weights)
    final = weights[-1].detail
    assert final.shards == 4 and final.shard == 4
    assert final.bytes_done == final.bytes_total > 0
    assert all(e.detail.bytes_total == final.bytes_total for e in weights)


def test_metadata_matches_the_generated_config(models_root: Path) -> None:
    slot = ModelSlot()
    load(slot, models_root / "tiny", device="cpu")
    meta = slot.loaded.metadata
    config = json.loads((models_root / "tiny" / "config.json").read_text())
    assert meta["architecture"] == "LlamaForCausalLM" and meta["model_type"] == "llama"
    assert meta["layers"] == config["num_hidden_layers"]
    assert meta["hidden_size"] == config["hidden_size"]
    assert meta["vocab_size"] == config["vocab_size"]
    assert meta["context_length"] == 2048
    assert meta["dtype"] == "bfloat16" and meta["device"] == "cpu"
    assert meta["has_chat_template"] is True
    assert meta["shards"] == 3
    expected = sum(p.numel() for p in slot.loaded.model.parameters())
    assert meta["parameters"] == expected
    assert set(meta["timings"]) >= {"tokenizer", "config", "weights", "device", "metadata", "total"}
    tok = slot.loaded.tokenizer
    assert tok.decode(tok.encode("안녕하세요, MACtuner!"), skip_special_tokens=True) == "안녕하세요, MACtuner!"


def test_tied_embeddings_and_dtype_conversion(models_root: Path) -> None:
    slot = ModelSlot()
    events = load(slot, models_root / "tied", dtype="float32")
    model = slot.loaded.model
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert slot.loaded.dtype == "float32" and slot.loaded.metadata["tie_word_embeddings"] is True
    assert events[-1].percent == 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore on the weights' memory")
def test_weights_are_resident_when_the_load_says_100(models_root: Path) -> None:
    """Every byte of every weight is in memory at 'done' (no page left to fault in on first use)."""
    import os

    from loader.pipeline.weights.pagecache import resident_fraction

    path = models_root / "medium"
    for shard in path.glob("*.safetensors"):  # cold cache, so residency is our doing
        fd = os.open(shard, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    slot = ModelSlot()
    load(slot, path, device="cpu")
    weights = resident = 0
    for p in slot.loaded.model.parameters():
        size = p.numel() * p.element_size()
        weights += size
        resident += int((resident_fraction(p.data_ptr(), size) or 0.0) * size)
    assert resident >= weights * 0.99, f"only {resident}/{weights} bytes resident at 100%"


def test_cancel_mid_weights_frees_the_slot(models_root: Path) -> None:
    slot = ModelSlot()
    cancel = threading.Event()
    seen: list[ProgressEvent] = []

    def on_event(event: ProgressEvent) -> None:
        # The first weights event, whatever its percent: on a fast machine the capped read may still
        # finish between two events, so waiting for "> 40 %" could miss the stage altogether.
        seen.append(event)
        if event.stage is Stage.WEIGHTS:
            cancel.set()

    with pytest.raises(LoadCancelled):
        slot.load(LoadRequest(models_root / "medium", device="cpu", read_limit_bps=50e6), on_event, cancel)
    assert slot.loaded is None and not slot.busy
    assert any(e.stage is Stage.WEIGHTS for e in seen) and max(e.percent for e in seen) < 85
    load(slot, models_root / "tiny")
    assert slot.loaded is not None and slot.loaded.name == "tiny"


def test_loading_a_new_model_unloads_the_previous_one(models_root: Path) -> None:
    slot = ModelSlot()
    load(slot, models_root / "tiny")
    first = weakref.ref(slot.loaded.model)
    load(slot, models_root / "tied")
    gc.collect()
    assert first() is None, "the previous model must be freed"
    assert slot.loaded.name == "tied"
    assert slot.unload() is True
    assert slot.loaded is None and slot.unload() is False


def test_second_load_while_loading_is_refused(models_root: Path) -> None:
    from loader.pipeline.errors import LoaderBusy

    slot = ModelSlot()
    refused: list[str] = []

    def on_event(event: ProgressEvent) -> None:
        if event.stage is Stage.TOKENIZER and not refused:
            with pytest.raises(LoaderBusy) as info:
                slot.load(LoadRequest(models_root / "tied"), lambda e: None, threading.Event())
            refused.append(info.value.user_message)

    slot.load(LoadRequest(models_root / "tiny"), on_event, threading.Event())
    assert refused and "로드하는 중" in refused[0]
    assert slot.loaded.name == "tiny"
