"""``python -m mactuner_dev LAYOUT OUT ...``: the layouts of ``layouts.py`` from the command line.

    python -m mactuner_dev trainer-run models/run --steps 500 1000
    python -m mactuner_dev lora models/my-lora --base models/tiny [--base-name tiny --rank 8 --alpha 16]
    python -m mactuner_dev hf-cache ~/.cache/huggingface/hub --repo acme/tiny --source models/tiny
    python -m mactuner_dev bin models/tiny-bin --source models/tiny [--shards 2]
    python -m mactuner_dev gguf models/q4/model.gguf
    python -m mactuner_dev mlx models/tiny-mlx --source models/tiny

A checkpoint itself comes from ``python -m mactuner_dev.synth``. Each command prints the folder it
wrote; nothing downloads anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mactuner_dev import layouts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mactuner_dev", description="Generate the folder layouts users keep.")
    sub = p.add_subparsers(dest="layout", required=True)
    run = sub.add_parser("trainer-run", help="run/checkpoint-N folders as Trainer leaves them")
    run.add_argument("out", type=Path)
    run.add_argument("--steps", type=int, nargs="+", default=[500])
    run.add_argument("--params", type=int, default=3_000_000)
    lora = sub.add_parser("lora", help="a PEFT LoRA adapter over a generated base")
    lora.add_argument("out", type=Path)
    lora.add_argument("--base", type=Path, required=True, help="the base model folder")
    lora.add_argument("--base-name", help="base_model_name_or_path to write (default: the base folder's name)")
    lora.add_argument("--rank", type=int, default=4)
    lora.add_argument("--alpha", type=int, default=8)
    cache = sub.add_parser("hf-cache", help="models--org--name with blobs, a snapshot and refs/main")
    cache.add_argument("cache", type=Path)
    cache.add_argument("--repo", required=True, help="org/name")
    cache.add_argument("--source", type=Path, required=True, help="the model folder to put in the cache")
    binary = sub.add_parser("bin", help="the same weights as pytorch_model.bin (sharded with --shards)")
    binary.add_argument("out", type=Path)
    binary.add_argument("--source", type=Path, required=True)
    binary.add_argument("--shards", type=int, default=1)
    gguf = sub.add_parser("gguf", help="a GGUF file header (listed with why it does not load here)")
    gguf.add_argument("out", type=Path)
    mlx = sub.add_parser("mlx", help="an MLX-quantized folder (listed with why)")
    mlx.add_argument("out", type=Path)
    mlx.add_argument("--source", type=Path, required=True)
    return p


def main(argv: list[str] | None = None) -> Path:
    args = parser().parse_args(argv)
    if args.layout == "trainer-run":
        out = layouts.write_trainer_run(args.out, steps=tuple(args.steps), params=args.params)
    elif args.layout == "lora":
        name = args.base_name or args.base.name
        out = layouts.write_lora(args.out, args.base, name, r=args.rank, alpha=args.alpha)
    elif args.layout == "hf-cache":
        out = layouts.write_hf_cache(args.cache, args.repo, args.source)
    elif args.layout == "bin":
        out = layouts.write_bin(args.out, args.source, shards=args.shards)
    elif args.layout == "gguf":
        out = layouts.write_gguf(args.out)
    else:
        out = layouts.write_mlx(args.out, args.source)
    print(out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
