"""The 95 % stage: what the user wants to know about the model that is now in memory."""

from __future__ import annotations

from typing import Any

from loader.pipeline.inspect.checkpoint import CheckpointInfo


def _first(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    text = getattr(config, "text_config", None)
    if text is not None and text is not config:
        return _first(text, *names)
    return None


def loaded_architecture(model: Any) -> str:
    """The transformers class that holds the weights: an unmerged adapter's wrapper names its base's."""
    get_base = getattr(model, "get_base_model", None)  # peft's PeftModel; a plain model has none
    base = get_base() if callable(get_base) else model
    return type(base).__name__


def claimed_architecture(config: Any, loaded: str) -> str | None:
    """What config.json's ``architectures`` says, when that is not the class that was loaded.

    The class comes from ``model_type`` (any ``…ForCausalLM`` claim resolves through its mapping),
    so the claim is only a label the checkpoint chose, possibly a look-alike (a Cyrillic "а").
    """
    archs = getattr(config, "architectures", None)
    claim = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    return claim if claim is not None and claim != loaded else None


def extract_metadata(model: Any, tokenizer: Any, config: Any, info: CheckpointInfo, device: str) -> dict[str, Any]:
    """What the card shows: read from the model in memory, not from what its files claim."""
    # One pass (model.parameters() already skips tied duplicates); cheaper than get_memory_footprint.
    params = memory = 0
    first = None
    for p in model.parameters():
        first = first if first is not None else p
        params += p.numel()
        memory += p.numel() * p.element_size()
    memory += sum(b.numel() * b.element_size() for b in model.buffers())
    architecture = loaded_architecture(model)
    claim = claimed_architecture(config, architecture)
    return {
        "architecture": architecture,
        **({"claimed_architecture": claim[:200]} if claim is not None else {}),
        "model_class": type(model).__name__,
        "model_type": getattr(config, "model_type", None),
        "parameters": params,
        "dtype": str(first.dtype).removeprefix("torch.") if first is not None else None,
        "device": device,
        "memory_bytes": memory,
        "checkpoint_bytes": info.file_bytes,
        "shards": len(info.shard_files),
        "vocab_size": _first(config, "vocab_size"),
        "tokenizer_vocab_size": len(tokenizer),
        "context_length": _first(config, "max_position_embeddings", "n_positions", "max_seq_len"),
        "layers": _first(config, "num_hidden_layers", "n_layer", "num_layers"),
        "hidden_size": _first(config, "hidden_size", "n_embd", "d_model"),
        "tie_word_embeddings": bool(_first(config, "tie_word_embeddings")),
        "tokenizer_class": type(tokenizer).__name__,
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "format": info.format,
        "adapter": info.adapter.describe() if info.adapter is not None else None,
    }
