"""One boundary types the weights' errors by class; one dtype table; one byte-progress account."""

from __future__ import annotations

import errno
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loader.pipeline import LoadRequest, ModelSlot, stages
from loader.pipeline.boundary import shard_read_error, weights_error
from loader.pipeline.dtypes import BY_CODE, FLOAT_CODES, LOADABLE_NAMES, code_of, element_size, name_of
from loader.pipeline.errors import LoadError
from loader.pipeline.weights.bytes_progress import CHUNK, MIN_CHUNK, ByteProgress, chunk_bytes


def _code(exc: BaseException, target: str = "cpu") -> str | None:
    typed = weights_error(exc, "tiny", target)
    return typed.code if typed is not None else None


def test_the_class_decides_not_the_words() -> None:
    from safetensors import SafetensorError

    assert _code(SafetensorError("Error while deserializing header: invalid JSON")) == "shard_corrupt"
    assert _code(pickle.UnpicklingError("bad pickle")) == "shard_corrupt"
    assert _code(EOFError("Ran out of input")) == "shard_corrupt"
    assert _code(OSError(errno.EIO, "Input/output error")) == "shard_corrupt"
    assert _code(FileNotFoundError(errno.ENOENT, "gone", "/m/model.safetensors")) == "shard_missing"
    assert _code(PermissionError(errno.EACCES, "denied", "/m/model.safetensors")) == "folder_unreadable"
    # a runtime error that merely mentions a header is not a corrupt shard
    assert _code(RuntimeError("bad header in the attention mask")) == "load_error"
    assert _code(MemoryError()) == "out_of_memory"
    assert _code(ImportError("no module named bitsandbytes")) == "missing_package"
    assert _code(RecursionError()) == "config_unreadable"
    assert _code(TypeError("no kernel"), "mps") == "device_unavailable"
    assert _code(TypeError("a bug"), "cpu") is None  # a bug propagates as an internal error
    assert _code(ZeroDivisionError()) is None


def test_a_reader_names_the_shard_that_vanished() -> None:
    missing = shard_read_error(FileNotFoundError(errno.ENOENT, "gone", "/m/model-00002.safetensors"))
    assert missing.code == "shard_missing" and missing.params["name"] == "model-00002.safetensors"
    assert shard_read_error(OSError(errno.EIO, "Input/output error")).code == "shard_corrupt"


def test_a_safetensors_error_mid_load_is_shard_corrupt(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """safetensors' own error (an ``Exception``, not an ``OSError``) used to escape as "internal"."""
    from safetensors import SafetensorError

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise SafetensorError("Error while deserializing header: MetadataIncompleteBuffer")

    monkeypatch.setenv("MACTUNER_ENGINE", "transformers")
    monkeypatch.setattr(stages, "load_observed", broken)
    with pytest.raises(LoadError) as caught:
        ModelSlot().load(LoadRequest(models_root / "tiny", device="cpu"), lambda _e: None, threading.Event())
    assert caught.value.code == "shard_corrupt"


def test_one_dtype_table_answers_every_question() -> None:
    assert sorted(FLOAT_CODES) == ["BF16", "F16", "F32", "F64"]  # float8 is kept as stored, never converted
    assert code_of("bfloat16") == "BF16" and name_of("F8_E4M3") == "float8_e4m3fn" and code_of("auto") is None
    assert [element_size(n) for n in LOADABLE_NAMES] == [2, 2, 4] and element_size("auto") is None
    streamed = {c for c, d in BY_CODE.items() if d.streamed}
    assert streamed == {"BF16", "F16", "F32", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"}


def test_byte_progress_paces_reports_and_stops_on_cancel() -> None:
    assert chunk_bytes(0) == CHUNK and chunk_bytes(40e6) == MIN_CHUNK and chunk_bytes(10e9) == CHUNK
    cancel = threading.Event()
    progress = ByteProgress(1000, cancel, limit_bps=100.0)
    assert progress.rate_and_eta(0) == (0.0, None)
    threading.Timer(0.1, cancel.set).start()
    started = time.monotonic()
    assert progress.pace(1000) is False  # ten seconds of budget, cut short by the cancel
    assert time.monotonic() - started < 1.0
    assert progress.rate_and_eta(500) == (0.0, None)  # half of one chunk, 0.1 s: not a reading yet
    rate, eta = progress.rate_and_eta(1000)
    assert 0 < rate <= 100.0 and eta == 0  # all done: the rate, never above the cap


def test_first_rate_readings_wait_to_settle_and_never_exceed_the_cap() -> None:
    from loader.pipeline.weights.bytes_progress import SETTLE_S, ByteProgress

    capped = ByteProgress(1 << 30, threading.Event(), limit_bps=60e6)
    assert capped.rate_and_eta(capped.chunk) == (0.0, None)  # one free chunk: no "493 MB/s under a 60 MB/s cap"
    capped.started -= SETTLE_S + 0.1
    rate, eta = capped.rate_and_eta(3 * capped.chunk + (100 << 20))
    assert rate <= 60e6 and eta is not None and eta > 0
    free = ByteProgress(1 << 20, threading.Event())
    assert free.rate_and_eta(1 << 20)[0] > 0  # a load done within the settling time still has its rate
