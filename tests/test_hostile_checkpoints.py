"""Hostile folders are refused in the preflight with a typed error, before the current model goes.

Each case damages a copy of the generated ``tiny`` checkpoint the way a stranger's download
could: FIFOs and ``/dev/zero`` links where files should be, escapes out of the folder, JSON
that is huge or nested 200,000 deep, configs that describe models no checkpoint holds, tensor
names that match nothing, and every kind of malformed safetensors header. None may hang, end
as ``internal``, echo a byte of a file into the error, or cost the model already loaded.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loader.pipeline import LoadError, LoadRequest, ModelSlot
from loader.pipeline.preflight import preflight

SECRET = b"root:x:0:0:SECRET-BYTES"  # the "outside" file escapes point at
SECRET_AS_LENGTH = str(struct.unpack("<Q", SECRET[:8])[0])

Damage = Callable[[Path, Path], None]  # (model folder, a file outside it)


def _edit_config(path: Path, **changes: Any) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def _shards(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def _read_shard(shard: Path) -> tuple[dict[str, Any], bytes]:
    raw = shard.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_shard(shard: Path, header: dict[str, Any], data: bytes) -> None:
    text = json.dumps(header).encode()
    shard.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _edit_header(mutate: Callable[[dict[str, Any], str], None]) -> Damage:
    """Rewrite the first shard's header; ``mutate`` gets the header and its first tensor's name."""

    def damage(path: Path, _outside: Path) -> None:
        shard = _shards(path)[0]
        header, data = _read_shard(shard)
        first = sorted(k for k in header if k != "__metadata__")[0]
        mutate(header, first)
        _write_shard(shard, header, data)

    return damage


def _set(field: str, value: Any) -> Damage:
    return _edit_header(lambda h, name: h[name].__setitem__(field, value))


def _replace_file(name: str, make: Callable[[Path, Path], None]) -> Damage:
    def damage(path: Path, outside: Path) -> None:
        (path / name).unlink()
        make(path / name, outside)

    return damage


def _fifo(target: Path, _outside: Path) -> None:
    os.mkfifo(target)


def _dev_zero(target: Path, _outside: Path) -> None:
    target.symlink_to("/dev/zero")


def _escape(target: Path, outside: Path) -> None:
    target.symlink_to(outside)


def _sparse(size: int) -> Callable[[Path, Path], None]:
    def make(target: Path, _outside: Path) -> None:
        with target.open("wb") as fh:
            fh.truncate(size)

    return make


def _weight_map(entry: str) -> Damage:
    def damage(path: Path, _outside: Path) -> None:
        index = json.loads((path / "model.safetensors.index.json").read_text())
        first = sorted(index["weight_map"])[0]
        index["weight_map"][first] = entry
        (path / "model.safetensors.index.json").write_text(json.dumps(index))

    return damage


def _single_shard(tensors: dict[str, tuple[str, list[int]]]) -> Damage:
    """Replace every shard by one ``model.safetensors`` holding ``tensors`` (name: dtype, shape)."""

    def damage(path: Path, _outside: Path) -> None:
        for f in [*_shards(path), path / "model.safetensors.index.json"]:
            f.unlink()
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, (dtype, shape) in tensors.items():
            size = {"F32": 4, "BF16": 2}[dtype] * math.prod(shape)
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
        _write_shard(path / "model.safetensors", header, b"\0" * offset)

    return damage


def _rename_all(path: Path, _outside: Path) -> None:
    weight_map = {}
    for shard in _shards(path):
        header, data = _read_shard(shard)
        renamed = {k if k == "__metadata__" else f"renamed.{k}": v for k, v in header.items()}
        _write_shard(shard, renamed, data)
        weight_map.update({k: shard.name for k in renamed if k != "__metadata__"})
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _drop_first_tensor(path: Path, _outside: Path) -> None:
    def drop(header: dict[str, Any], name: str) -> None:
        removed = header.pop(name)
        size = removed["data_offsets"][1] - removed["data_offsets"][0]
        for entry in header.values():  # shift the others down; the data loses the dropped bytes
            if isinstance(entry, dict) and "data_offsets" in entry and entry["data_offsets"][0] >= size:
                entry["data_offsets"] = [entry["data_offsets"][0] - size, entry["data_offsets"][1] - size]

    shard = _shards(path)[0]
    header, data = _read_shard(shard)
    first = min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    cut = header[first]["data_offsets"][1]
    drop(header, first)
    _write_shard(shard, header, data[cut:])
    index = json.loads((path / "model.safetensors.index.json").read_text())
    del index["weight_map"][first]
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def _duplicate_across_shards(path: Path, _outside: Path) -> None:
    first, second = _shards(path)[:2]
    h1, _ = _read_shard(first)
    h2, data2 = _read_shard(second)
    name = sorted(k for k in h1 if k != "__metadata__")[0]
    entry = dict(h1[name])
    size = entry["data_offsets"][1] - entry["data_offsets"][0]
    entry["data_offsets"] = [len(data2), len(data2) + size]
    h2[name] = entry
    _write_shard(second, h2, data2 + b"\0" * size)


def _overlap(header: dict[str, Any], name: str) -> None:
    others = sorted((v["data_offsets"][0], k) for k, v in header.items() if k not in ("__metadata__", name))
    start, end = header[name]["data_offsets"]
    header[others[0][1]]["data_offsets"][0] -= 2  # starts 2 bytes inside its predecessor
    header[others[0][1]]["data_offsets"][1] -= 2
    header[name]["data_offsets"] = [start, end]


def _length_field_from_outside(path: Path, outside: Path) -> None:
    shard = _shards(path)[0]
    header, data = _read_shard(shard)
    shard.write_bytes(SECRET[:8] + b"{}" + data)


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


def _shard_links_outside(path: Path, outside: Path) -> None:
    shard = _shards(path)[0]
    shard.unlink()
    shard.symlink_to(outside)


def _described_30gb(path: Path, outside: Path) -> None:
    _edit_config(path, **LLAMA_30GB)
    _single_shard({"x": ("F32", [4])})(path, outside)


LLAMA_30GB = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8192,
    "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64,
    "num_key_value_heads": 8, "vocab_size": 128256, "dtype": "bfloat16",
}  # fmt: skip

CASES: dict[str, tuple[Damage, str]] = {
    # files: FIFOs, devices, escapes, sizes
    "config.json is a FIFO": (_replace_file("config.json", _fifo), "unsafe_file"),
    "tokenizer.json is a FIFO": (_replace_file("tokenizer.json", _fifo), "unsafe_file"),
    "tokenizer_config.json is a FIFO": (_replace_file("tokenizer_config.json", _fifo), "unsafe_file"),
    "config.json links to /dev/zero": (_replace_file("config.json", _dev_zero), "unsafe_file"),
    "tokenizer.json links to /dev/zero": (_replace_file("tokenizer.json", _dev_zero), "unsafe_file"),
    "config.json links outside the folder": (_replace_file("config.json", _escape), "unsafe_file"),
    "chat template links outside the folder": (_replace_file("chat_template.jinja", _escape), "unsafe_file"),
    "shard links outside the folder": (_shard_links_outside, "unsafe_file"),
    "config.json is 100 MB": (_replace_file("config.json", _sparse(100 * 1024 * 1024)), "file_too_large"),
    "tokenizer.json is 100 MB": (_replace_file("tokenizer.json", _sparse(100 * 1024 * 1024)), "file_too_large"),
    "index weight_map climbs out with ..": (_weight_map("../../../../etc/passwd"), "unsafe_file"),
    "index weight_map names an absolute path": (_weight_map("/etc/passwd"), "unsafe_file"),
    "index without metadata": (
        lambda p, o: (p / "model.safetensors.index.json").write_text('{"weight_map": {}}'),
        "shard_corrupt",
    ),
    "index is nested 200,000 deep": (
        lambda p, o: (p / "model.safetensors.index.json").write_text(_deep_json(200_000)),
        "shard_corrupt",
    ),
    # config fields
    "config nested 200,000 deep": (
        lambda p, o: (p / "config.json").write_text(_deep_json(200_000)),
        "config_unreadable",
    ),
    "architectures is 5": (lambda p, o: _edit_config(p, architectures=5), "config_unreadable"),
    "architectures is a dict": (lambda p, o: _edit_config(p, architectures={"a": 1}), "config_unreadable"),
    "architectures holds a number": (lambda p, o: _edit_config(p, architectures=[5]), "config_unreadable"),
    "architectures names pipeline": (lambda p, o: _edit_config(p, architectures=["pipeline"]), "unknown_architecture"),
    "architectures names AutoTokenizer": (
        lambda p, o: _edit_config(p, architectures=["AutoTokenizer"]),
        "unknown_architecture",
    ),
    "model_type is a list": (lambda p, o: _edit_config(p, model_type=["llama"]), "config_unreadable"),
    "a billion layers": (lambda p, o: _edit_config(p, num_hidden_layers=1_000_000_000), "config_unreadable"),
    "more layers than the checkpoint holds": (lambda p, o: _edit_config(p, num_hidden_layers=1000), "weights_mismatch"),
    "a million experts": (lambda p, o: _edit_config(p, num_local_experts=1_000_000), "config_unreadable"),
    "zero attention heads": (lambda p, o: _edit_config(p, num_attention_heads=0), "config_unreadable"),
    "dtype is not a float type": (lambda p, o: _edit_config(p, dtype="float8_e4m3fn"), "config_unreadable"),
    "dtype is a number": (lambda p, o: _edit_config(p, dtype=5), "config_unreadable"),
    "hidden size past int64": (lambda p, o: _edit_config(p, hidden_size=2**70), "config_unreadable"),
    "30 GB config next to a 16-byte tensor": (_described_30gb, "weights_mismatch"),
    # weights that match nothing, or not all
    "every tensor renamed": (_rename_all, "weights_mismatch"),
    "header with no tensors": (_single_shard({}), "weights_mismatch"),
    "one weight missing": (_drop_first_tensor, "weights_mismatch"),
    "a weight of another shape": (lambda p, o: _edit_config(p, intermediate_size=128), "weights_mismatch"),
    "the same tensor in two shards": (_duplicate_across_shards, "shard_corrupt"),
    # malformed headers
    "shape is text": (_set("shape", ["a", "b"]), "shard_corrupt"),
    "shape is negative": (_set("shape", [-1, 4]), "shard_corrupt"),
    "shape is a float": (_set("shape", [2.5]), "shard_corrupt"),
    "shape is infinite": (_set("shape", [float("inf")]), "shard_corrupt"),
    "shape is huge": (_set("shape", [10**30, 10**30]), "shard_corrupt"),
    "shape is not a list": (_set("shape", "16x16"), "shard_corrupt"),
    "offsets negative": (_set("data_offsets", [-8, 0]), "shard_corrupt"),
    "offsets reversed": (_edit_header(lambda h, n: h[n]["data_offsets"].reverse()), "shard_corrupt"),
    "offsets overlap": (_edit_header(_overlap), "shard_corrupt"),
    "offsets overflow the file": (_set("data_offsets", [0, 2**62]), "shard_corrupt"),
    "offsets are text": (_set("data_offsets", ["0", "8"]), "shard_corrupt"),
    "offsets span the wrong byte count": (
        _edit_header(lambda h, n: h[n].__setitem__("shape", [1])),
        "shard_corrupt",
    ),
    "unknown dtype": (_set("dtype", "F128"), "shard_corrupt"),
    "entry is not an object": (_edit_header(lambda h, n: h.__setitem__(n, [1, 2, 3])), "shard_corrupt"),
    "metadata is not a map of strings": (
        _edit_header(lambda h, n: h.__setitem__("__metadata__", {"format": 5})),
        "shard_corrupt",
    ),
    "header is a list": (lambda p, o: _write_shard(_shards(p)[0], [], b""), "shard_corrupt"),  # type: ignore[arg-type]
    "length field holds another file's bytes": (_length_field_from_outside, "shard_corrupt"),
    "trailing bytes after the data": (
        lambda p, o: _shards(p)[0].write_bytes(_shards(p)[0].read_bytes() + b"\0" * 8),
        "shard_corrupt",
    ),
}


@pytest.fixture(scope="module")
def slot(models_root: Path) -> ModelSlot:
    slot = ModelSlot()
    slot.load(LoadRequest(models_root / "tied"), lambda e: None, threading.Event())
    return slot


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside-secret"
    secret.write_bytes(SECRET)
    return secret


def load_within(slot: ModelSlot, path: Path, seconds: float = 60) -> BaseException | None:
    """Load in a thread so a hung read fails the test instead of hanging the suite."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            slot.load(LoadRequest(path), lambda e: None, threading.Event())
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"load of {path.name} still running after {seconds} s (a hung read?)"
    return outcome[0]


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_folder_is_refused_in_preflight_with_its_code(
    case: str, broken: Path, outside: Path, slot: ModelSlot
) -> None:
    damage, code = CASES[case]
    damage(broken, outside)
    before = slot.loaded
    error = load_within(slot, broken)
    assert isinstance(error, LoadError), repr(error)
    assert error.code == code, f"{error.code}: {error.detail}"
    text = error.user_message + error.detail
    assert "SECRET" not in text and "root:x" not in text and SECRET_AS_LENGTH not in text
    assert slot.loaded is before  # refused before the unload: the loaded model stays
    assert not slot.busy


def test_good_model_still_loads_after_the_hostile_ones(slot: ModelSlot, models_root: Path) -> None:
    assert load_within(slot, models_root / "tiny") is None
    assert slot.loaded is not None and slot.loaded.name == "tiny"


@pytest.mark.parametrize(("name", "dtype", "scale"), [("tiny", "auto", 1), ("tied", "auto", 1), ("tied", "float32", 2)])
def test_preflight_returns_the_plan_the_config_implies(models_root: Path, name: str, dtype: str, scale: int) -> None:
    info = preflight(LoadRequest(models_root / name, dtype=dtype))
    plan = info.plan
    assert plan is not None and plan.model_class == "LlamaForCausalLM"
    assert plan.nbytes == scale * info.total_bytes  # tied lm_head counted once, per requested dtype
    sources = {t.source for t in plan.tensors.values() if t.source}
    assert sources == set(info.tensors)
    for tensor in plan.tensors.values():
        if tensor.source:
            assert tensor.shape == info.tensors[tensor.source].shape


def test_keys_without_the_base_model_prefix_still_load(broken: Path, slot: ModelSlot) -> None:
    """transformers adds a missing ``model.`` prefix itself: such checkpoints are not refused."""
    weight_map = {}
    for shard in _shards(broken):
        header, data = _read_shard(shard)
        header = {k.removeprefix("model."): v for k, v in header.items()}
        _write_shard(shard, header, data)
        weight_map.update({k: shard.name for k in header if k != "__metadata__"})
    (broken / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert load_within(slot, broken) is None
    assert slot.loaded is not None and slot.loaded.path == broken


def _hf_snapshot(models_root: Path, cache: Path) -> Path:
    """The real HF-cache layout: snapshot files are symlinks into the repo's ``blobs/``."""
    repo = cache / "models--acme--tiny"
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for k, f in enumerate(sorted((models_root / "tiny").iterdir())):
        blob = repo / "blobs" / f"{k:040x}"
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(Path("../../blobs") / blob.name)
    return snapshot


def test_hf_cache_snapshot_linking_into_its_blobs_loads(models_root: Path, tmp_path: Path, slot: ModelSlot) -> None:
    snapshot = _hf_snapshot(models_root, tmp_path / "hub")
    assert load_within(slot, snapshot) is None
    assert slot.loaded is not None and slot.loaded.path == snapshot


def test_hf_cache_snapshot_file_linking_out_of_its_repo_is_refused(
    models_root: Path, tmp_path: Path, outside: Path, slot: ModelSlot
) -> None:
    snapshot = _hf_snapshot(models_root, tmp_path / "hub")
    (snapshot / "tokenizer_config.json").unlink()
    (snapshot / "tokenizer_config.json").symlink_to(Path("../../../..") / outside.name)
    before = slot.loaded
    error = load_within(slot, snapshot)
    assert isinstance(error, LoadError) and error.code == "unsafe_file"
    assert slot.loaded is before


def test_a_deeply_nested_generation_config_is_a_config_error_not_a_weights_error(
    broken: Path, models_root: Path
) -> None:
    (broken / "generation_config.json").write_text("[" * 200_000 + "]" * 200_000)
    own = ModelSlot()
    with pytest.raises(LoadError) as caught:
        own.load(LoadRequest(broken), lambda e: None, threading.Event())
    assert caught.value.code == "config_unreadable", caught.value.detail
    assert own.load(LoadRequest(models_root / "tiny"), lambda e: None, threading.Event()).name == "tiny"
    own.unload()
