"""Click to first generated token through the web path vs plain transformers, and tokens/s.

    .venv/bin/python bench/first_token.py [--params 500M --shards 4 --runs 3 --tokens 64]

(a) web: POST /api/load on a live daphne → websocket "succeeded" → POST /api/generate
    {"max_new_tokens": 1, "wait": true}; the time is from the load's POST to the host's first
    token (the server's clocks, same machine: job created_at + after_load_s);
(b) plain: AutoTokenizer + AutoModelForCausalLM.from_pretrained + generate(max_new_tokens=1)
    in this process. Greedy on both sides, the same prompt. Hot and cold (cold evicts the shard
    files before each run), interleaved run by run.
Then the decode rate (tokens after the first / their time) of a ``--tokens`` answer: the web
path's ``tokens_per_s`` against plain ``generate`` with a streamer timing the same span.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from datetime import datetime
from typing import Any

from common import OUT, checkpoint, evict, timed, warm

from mactuner_dev.harness import Api, LiveServer, SocketWatcher, job_of, migrate, server_env

PROMPT = "The model loader measured what the user waits for:"


def plain_rate(model: Any, tokenizer: Any, tokens: int) -> float:
    import torch
    from transformers.generation.streamers import BaseStreamer

    marks: list[float] = []

    class Clock(BaseStreamer):
        def put(self, value: Any) -> None:
            marks.append(time.perf_counter())

        def end(self) -> None:
            return None

    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=Clock())
    new = out.shape[1] - ids["input_ids"].shape[1]
    return (new - 1) / (marks[-1] - marks[1])  # marks[0] is the prompt, marks[1] the first token


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default="500M")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    from loader.pipeline.preflight import warm_imports

    warm_imports()
    import transformers

    transformers.utils.logging.disable_progress_bar()
    path = checkpoint(f"llama-{args.params.lower()}-{args.shards}", args.params, args.shards)
    env = server_env(OUT, OUT / "bench-first-token.sqlite3")
    migrate(env)
    server = LiveServer(env).start().wait_warm()
    api = Api(server)
    holder: dict[str, Any] = {}

    def web() -> None:
        # A watcher per run: one left unread while plain loads (and the generation's snapshots pile
        # up) is closed by the server's unread-bytes bound.
        watcher = SocketWatcher(server)
        watcher.next()
        sent = time.time()
        status, body = api.call("POST", "/api/load", {"model": path.name, "device": "cpu", "dtype": "auto"})
        assert status == 202, body
        job_id = body["job"]["id"]  # type: ignore[index]
        final = watcher.until(lambda m: job_of(m).get("id") == job_id and not job_of(m)["active"], timeout=600)
        watcher.close()
        assert job_of(final)["state"] == "succeeded", final
        status, gen = api.call("POST", "/api/generate", {"prompt": PROMPT, "max_new_tokens": 1, "wait": True})
        assert status == 200 and gen["state"] == "done", gen
        created = datetime.fromisoformat(str(job_of(final)["created_at"])).timestamp()
        holder["web"] = created + float(gen["after_load_s"]) - sent  # type: ignore[arg-type]

    def plain() -> None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype="auto")
        model.generate(**tokenizer(PROMPT, return_tensors="pt"), max_new_tokens=1, do_sample=False)
        holder["plain_model"], holder["tokenizer"] = model, tokenizer

    def unload() -> None:
        api.call("POST", "/api/unload")
        holder.pop("plain_model", None)
        gc.collect()

    report: dict[str, dict[str, list[float]]] = {}
    rates: dict[str, list[float]] = {"web": [], "plain": []}
    try:
        web(), unload(), plain(), unload()  # first-load costs paid outside the timed runs
        evict(path)
        warm(path)
        for mode in ("hot", "cold"):
            times: dict[str, list[float]] = {"web": [], "plain": []}
            for _ in range(args.runs):
                evict(path) if mode == "cold" else warm(path)
                time.sleep(0.2)
                timed(web)
                times["web"].append(holder["web"])
                status, gen = api.call(
                    "POST", "/api/generate", {"prompt": PROMPT, "max_new_tokens": args.tokens, "wait": True}
                )
                if status == 200 and gen.get("tokens_per_s"):
                    rates["web"].append(float(gen["tokens_per_s"]))  # type: ignore[arg-type]
                unload()
                evict(path) if mode == "cold" else warm(path)
                time.sleep(0.2)
                times["plain"].append(timed(plain))
                rates["plain"].append(plain_rate(holder["plain_model"], holder["tokenizer"], args.tokens))
                unload()
            report[mode] = times
    finally:
        server.stop()
    size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    print(
        f"checkpoint: {path.name}, {size / 1e9:.2f} GB, bf16, cpu; best of {args.runs}, interleaved; prompt {PROMPT!r}"
    )
    for mode, times in report.items():
        best = {k: min(v) for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"  [{mode}] click->first token: web {best['web']:.3f}s (median {med['web']:.3f})  "
              f"plain {best['plain']:.3f}s (median {med['plain']:.3f})  web/plain {best['web'] / best['plain']:.3f} "
              f"(medians {med['web'] / med['plain']:.3f})")  # fmt: skip
    web_rate, plain_rate_ = max(rates["web"], default=0.0), max(rates["plain"], default=0.0)
    print(f"  decode rate ({args.tokens} tokens, after the first): web {web_rate:.2f} tok/s "
          f"(runs {', '.join(f'{r:.2f}' for r in rates['web'])})  plain {plain_rate_:.2f} tok/s "
          f"(runs {', '.join(f'{r:.2f}' for r in rates['plain'])})  web/plain {web_rate / max(plain_rate_, 1e-9):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
