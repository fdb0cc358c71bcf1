"""Writes Llama-style checkpoints with random weights and a real BPE tokenizer, offline.

Nothing may be downloaded, so tests, benchmarks and the first-run demo all load checkpoints
made here: sharded safetensors exactly as ``save_pretrained`` lays them out, and a byte-level
BPE tokenizer trained by the ``tokenizers`` library that round-trips any text.

    python -m mactuner_dev.synth models/demo --params 50M --shards 4 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "MACtuner loads Hugging Face models on your own machine and shows every stage.",
    "모델 로드 중입니다. 토크나이저, 구성, 가중치, 장치 이동, 메타데이터 순서로 진행됩니다.",
    "안녕하세요! 오늘은 작은 언어 모델을 미세 조정해 봅시다.",
    "def load(path):\n    return model.from_pretrained(path)\n",
    "Numbers 0123456789, punctuation .,;:!? and symbols #$%&*()[]{}<>+-=/\\ also appear.",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def parse_count(text: str) -> int:
    units = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


def train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<unk>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tok


def shape_for(params: int, vocab: int, layers: int, tied: bool) -> tuple[int, int]:
    """Hidden and intermediate sizes whose Llama parameter count is close to ``params``."""
    emb = 1 if tied else 2
    # per layer: 4 H^2 (attention) + 3 * H * 2.75H (MLP) ; plus emb * V * H
    a, b = layers * (4 + 3 * 2.75), emb * vocab
    hidden = (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
    hidden = max(64, int(round(hidden / 64)) * 64)
    return hidden, max(64, int(round(hidden * 2.75 / 64)) * 64)


def write_checkpoint(
    out: Path, params: int = 20_000_000, shards: int = 2, dtype: str = "bfloat16",
    tied: bool = False, layers: int | None = None, vocab_size: int = 1024, seed: int = 0,
) -> Path:  # fmt: skip
    from loader.pipeline.preflight import warm_imports

    warm_imports()
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(vocab_size)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    vocab = tok.get_vocab_size()
    layers = layers or max(2, min(32, int(round(params ** (1 / 3) / 40))))
    hidden, inter = shape_for(params, vocab, layers, tied)
    heads = max(1, hidden // 64)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=2048,
        tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1, pad_token_id=3,
    )  # fmt: skip
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = dtype
    config.save_pretrained(out)
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(config)
    names = [(n, tuple(p.shape)) for n, p in skeleton.named_parameters()]  # tied lm_head is deduplicated
    torch_dtype = getattr(torch, dtype)
    total = sum(math.prod(s) for _, s in names) * torch_dtype.itemsize
    per_shard = total / shards
    gen = torch.Generator().manual_seed(seed)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    acc = 0
    for name, shape in names:
        size = math.prod(shape) * torch_dtype.itemsize
        if acc + size / 2 > per_shard * len(groups) and len(groups) < shards and groups[-1]:
            groups.append([])
        groups[-1].append((name, shape))
        acc += size
    weight_map: dict[str, str] = {}
    for k, group in enumerate(groups, start=1):
        fname = "model.safetensors" if len(groups) == 1 else f"model-{k:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name, shape in group:
            if name.endswith("norm.weight"):
                tensors[name] = torch.ones(shape, dtype=torch_dtype)
            else:
                tensors[name] = (torch.randn(shape, generator=gen) * 0.02).to(torch_dtype)
            weight_map[name] = fname
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        del tensors
    if len(groups) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a random Llama-style checkpoint with a real BPE tokenizer.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--params", default="20M", help="parameter count, e.g. 5M, 500M, 2B")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tied", action="store_true", help="tie input and output embeddings")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=1024)
    args = parser.parse_args(argv)
    path = write_checkpoint(
        args.out, parse_count(args.params), args.shards, args.dtype, args.tied, args.layers, args.vocab_size
    )
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    print(f"wrote {path} ({size / 1e6:.1f} MB in {len(list(path.glob('*.safetensors')))} shard(s))")


if __name__ == "__main__":
    main()
