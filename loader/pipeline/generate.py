"""A short greedy generation with the loaded model: the proof that "loaded" means "answers".

Runs in the model host beside the slot (no Django). Greedy decoding (no sampling), so the same
prompt gives the same text; the tokenizer's chat template when asked for and present, the plain
prompt otherwise. Tokens are decoded as they come and handed to ``on_update`` at most every
``UPDATE_S``; a cancel is seen between two tokens (a stopping criterion). A generation stuck in
native code is not this module's to stop: the supervisor kills the host.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loader.pipeline.request import LoadedModel

UPDATE_S = 0.1
MAX_PROMPT_CHARS = 4000
MAX_NEW_TOKENS = 256


@dataclass
class GenerationRequest:
    prompt: str
    max_new_tokens: int = 32
    chat: bool = False


@dataclass
class Progress:
    """What the user sees while tokens arrive; ``first_token_at`` is wall-clock (the web side
    measures it against the click)."""

    text: str = ""
    tokens: int = 0
    started_at: float = 0.0
    first_token_at: float | None = None
    ended_at: float | None = None
    chat: bool = False

    def to_dict(self) -> dict[str, Any]:
        decoding = (self.ended_at or time.time()) - (self.first_token_at or self.started_at)
        rate = (self.tokens - 1) / decoding if self.tokens > 1 and decoding > 0 else None
        return {
            "text": self.text, "tokens": self.tokens, "started_at": self.started_at,
            "first_token_at": self.first_token_at, "ended_at": self.ended_at, "chat": self.chat,
            # Decode rate after the first token (the prompt's prefill is in first_token_s).
            "tokens_per_s": round(rate, 2) if rate is not None else None,
            "first_token_s": round(self.first_token_at - self.started_at, 4) if self.first_token_at else None,
        }  # fmt: skip


def prompt_ids(tokenizer: Any, request: GenerationRequest) -> tuple[Any, Any, bool]:
    """(input_ids, attention_mask, chat used): the chat template only where the tokenizer has one."""
    if request.chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": request.prompt}]
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return encoded["input_ids"], encoded.get("attention_mask"), True
    encoded = tokenizer(request.prompt, return_tensors="pt")
    return encoded["input_ids"], encoded.get("attention_mask"), False


def generate(
    loaded: LoadedModel, request: GenerationRequest, on_update: Callable[[Progress], None], cancel: threading.Event
) -> Progress:
    """Generate greedily; returns the final progress (``cancel`` set: stopped early)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    tokenizer, model = loaded.tokenizer, loaded.model
    input_ids, attention_mask, used_chat = prompt_ids(tokenizer, request)
    device = next(model.parameters()).device
    progress = Progress(started_at=time.time(), chat=used_chat)
    new_ids: list[int] = []
    sent = [0.0]

    class Streamer(BaseStreamer):
        prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:  # generate() hands the prompt over first
                self.prompt_seen = True
                return
            new_ids.extend(int(t) for t in value.reshape(-1).tolist())
            progress.tokens = len(new_ids)
            progress.first_token_at = progress.first_token_at or time.time()
            now = time.monotonic()
            if now - sent[0] >= UPDATE_S or progress.tokens == 1:
                sent[0] = now
                progress.text = tokenizer.decode(new_ids, skip_special_tokens=True)
                on_update(progress)

        def end(self) -> None:
            return None

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device) if attention_mask is not None else None,
            max_new_tokens=request.max_new_tokens, do_sample=False, num_beams=1, temperature=None, top_p=None,
            top_k=None, pad_token_id=pad, streamer=Streamer(), stopping_criteria=StoppingCriteriaList([Cancelled()]),
        )  # fmt: skip
    progress.ended_at = time.time()
    progress.text = tokenizer.decode(new_ids, skip_special_tokens=True)
    return progress
