"""The folder layouts users really have, generated offline around ``synth.write_checkpoint``.

A Trainer run (``checkpoint-N`` with optimizer/scheduler/RNG state beside the model), a PEFT LoRA
adapter over a generated base, the Hugging Face cache (blobs + snapshots + refs), a legacy
``pytorch_model.bin`` (single or sharded with its index), a fake GGUF file, an MLX-quantized
folder and a malicious pickle whose unpickling would create a marker file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import struct
from pathlib import Path
from typing import Any

from .synth import write_checkpoint

SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json",
              "generation_config.json", "chat_template.jinja")  # fmt: skip
TRAINER_STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")


def write_trainer_run(run: Path, steps: tuple[int, ...] = (500,), params: int = 3_000_000, seed: int = 0) -> Path:
    """``run/checkpoint-N`` folders as ``Trainer.save_model``/``_save_checkpoint`` leave them."""
    import torch

    for step in steps:
        ckpt = run / f"checkpoint-{step}"
        write_checkpoint(ckpt, params=params, shards=2, seed=seed)
        torch.save({"state": {0: {"exp_avg": torch.zeros(4)}}, "param_groups": [{"lr": 1e-4}]}, ckpt / "optimizer.pt")
        torch.save({"last_epoch": step}, ckpt / "scheduler.pt")
        torch.save({"python": 1, "cpu": torch.get_rng_state()}, ckpt / "rng_state.pth")
        torch.save({"output_dir": str(run), "learning_rate": 1e-4}, ckpt / "training_args.bin")
        state = {"global_step": step, "epoch": step / 1000, "log_history": [{"loss": 1.0, "step": step}]}
        (ckpt / "trainer_state.json").write_text(json.dumps(state))
    return run


def write_lora(
    out: Path, base: Path, base_name: str, r: int = 4, alpha: int = 8,
    targets: tuple[str, ...] = ("q_proj", "v_proj"), seed: int = 0, peft_type: str = "LORA",
) -> Path:  # fmt: skip
    """A PEFT adapter trained on nothing: ``get_peft_model`` over the base, random (non-zero) weights."""
    import torch
    from peft import IA3Config, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    if peft_type == "IA3":
        config: Any = IA3Config(task_type="CAUSAL_LM", target_modules=list(targets), feedforward_modules=[])
    else:
        config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, target_modules=list(targets))
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # LoRA's B starts at zero: give it weights so merging changes the model
        for name, param in peft_model.named_parameters():
            if "lora_" in name or "ia3_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05 + (1.0 if "ia3_" in name else 0.0))
    peft_model.save_pretrained(str(out))
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = base_name
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out


def write_hf_cache(cache: Path, repo_id: str, source: Path, revision: str | None = None, ref: str = "main") -> Path:
    """``models--org--name`` with content-addressed blobs, a snapshot of links and ``refs/main``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = revision or hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in source.iterdir() if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    return snapshot


def write_bin(out: Path, source: Path, shards: int = 1, keep_safetensors: bool = False) -> Path:
    """The same weights as ``source`` saved as ``pytorch_model.bin`` (sharded with an index if asked)."""
    import torch
    from safetensors.torch import load_file

    out.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    state: dict[str, Any] = {}
    for file in sorted(source.glob("*.safetensors")):
        state.update(load_file(str(file)))
        if keep_safetensors:
            shutil.copy(file, out / file.name)
    if keep_safetensors and (source / "model.safetensors.index.json").exists():
        shutil.copy(source / "model.safetensors.index.json", out / "model.safetensors.index.json")
    names = sorted(state)
    if shards == 1:
        torch.save(state, out / "pytorch_model.bin")
        return out
    groups = [names[k::shards] for k in range(shards)]
    weight_map = {}
    for k, group in enumerate(groups, start=1):
        fname = f"pytorch_model-{k:05d}-of-{shards:05d}.bin"
        torch.save({n: state[n] for n in group}, out / fname)
        weight_map.update(dict.fromkeys(group, fname))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return out


def write_gguf(path: Path, architecture: str = "llama") -> Path:
    """A GGUF v3 header (magic, version, counts) with one string key, ``general.architecture``."""
    key, value = b"general.architecture", architecture.encode()
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<I", 8) + struct.pack("<Q", len(value)) + value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv)
    return path


def write_mlx(out: Path, source: Path) -> Path:
    """An mlx-lm style 4-bit folder: the config's ``quantization`` block and safetensors weights."""
    shutil.copytree(source, out)
    config = json.loads((out / "config.json").read_text())
    config["quantization"] = {"group_size": 64, "bits": 4}
    (out / "config.json").write_text(json.dumps(config))
    return out


class _Touch:
    """Pickles as ``os.system("touch MARKER")``: unpickling it unsafely would create the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def write_malicious_bin(out: Path, source: Path, marker: Path, raw_pickle: bool = False) -> Path:
    """A model folder whose ``pytorch_model.bin`` carries an ``os.system`` reduce next to real tensors."""
    import pickle

    import torch
    from safetensors.torch import load_file

    out.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    state: dict[str, Any] = {"payload": _Touch(marker)}  # first: an unpickler meets it before any tensor
    for file in sorted(source.glob("*.safetensors")):
        state.update(load_file(str(file)))
    if raw_pickle:  # a bare pickle, not torch's zip container
        with (out / "pytorch_model.bin").open("wb") as fh:
            pickle.dump(state, fh, protocol=2)  # the protocol torch.load expects: it reaches the global
    else:
        torch.save(state, out / "pytorch_model.bin")
    return out
