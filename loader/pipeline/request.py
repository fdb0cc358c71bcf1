"""What a load is asked to do and what it produces: plain data every pipeline module may import.

Kept in its own leaf module so the preflight (``resolve``), the staged load (``stages``) and the
slot import it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LoadRequest:
    path: Path
    device: str = "auto"
    dtype: str = "auto"
    allow_remote_code: bool = False
    lang: str = "ko"
    read_limit_bps: float = 0.0
    # The catalog name the user chose (``org/name``, ``run/checkpoint-500``); defaults to the folder.
    name: str = ""
    # A PEFT adapter: merge it into the base (``merge_and_unload``) instead of keeping it separate.
    merge: bool = False
    # Finds an adapter's base by name (the catalog: models folder, HF cache); None: absolute paths only.
    base_resolver: Callable[[str], Path | None] | None = None
    # The web reads only inside its roots: an absolute base path the resolver did not accept is
    # refused (``adapter_base_outside``). The terminal (the user's own shell) may name any folder.
    base_roots_only: bool = False
    # When the user asked (wall clock; the job row's creation): timings then say how long the
    # request waited for its thread ("queued") and for the first weights byte ("first_byte").
    requested_at: float = 0.0
    # What the load changed from what was asked, and why ({text, template, params}): the metadata says it.
    notes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        return self.name or self.path.name

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> LoadRequest:
        """The request the web side sent the host as JSON (``runner.load_spec``); an adapter's
        base comes from its ``bases`` map (the catalog resolved it; the host has no settings)."""
        bases: dict[str, str] = spec.get("bases") or {}
        return cls(
            Path(spec["path"]), spec["device"], spec["dtype"], allow_remote_code=bool(spec.get("allow_remote_code")),
            lang=spec.get("lang", "ko"), read_limit_bps=float(spec.get("read_limit_bps", 0.0)),
            name=spec.get("name", ""), merge=bool(spec.get("merge")), requested_at=float(spec.get("requested_at", 0.0)),
            base_resolver=lambda name: Path(bases[name]) if bases.get(name) else None,
            base_roots_only=bool(spec.get("base_roots_only", True)),
        )  # fmt: skip


@dataclass
class LoadedModel:
    name: str
    path: Path
    device: str
    dtype: str
    model: Any
    tokenizer: Any
    metadata: dict[str, Any] = field(default_factory=dict)
