"""Typed progress events and the product's stage map.

The percent at every stage boundary is a product promise (see the FAQ), so the map lives in
one place and every surface (web, websocket, terminal) derives its numbers from it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


class Stage(enum.StrEnum):
    PREPARING = "preparing"
    TOKENIZER = "tokenizer"
    CONFIG = "config"
    WEIGHTS = "weights"
    DEVICE = "device"
    METADATA = "metadata"
    DONE = "done"


# (start %, end %) of each stage; the end is the percent the FAQ shows when the stage finishes.
STAGE_SPAN: dict[Stage, tuple[float, float]] = {
    Stage.PREPARING: (0.0, 5.0),
    Stage.TOKENIZER: (5.0, 25.0),
    Stage.CONFIG: (25.0, 40.0),
    Stage.WEIGHTS: (40.0, 85.0),
    Stage.DEVICE: (85.0, 90.0),
    Stage.METADATA: (90.0, 95.0),
    Stage.DONE: (100.0, 100.0),
}

# Korean first (the users are Korean); English is chosen by the UI's language.
STAGE_MESSAGES: dict[Stage, tuple[str, str]] = {
    Stage.PREPARING: ("준비 중...", "Preparing..."),
    Stage.TOKENIZER: ("토크나이저 로드 중...", "Loading tokenizer..."),
    Stage.CONFIG: ("모델 구성 로드 중...", "Loading model config..."),
    Stage.WEIGHTS: ("체크포인트 샤드 로드 중...", "Loading checkpoint shards..."),
    Stage.DEVICE: ("모델을 {device}(으)로 이동 중...", "Moving model to {device}..."),
    Stage.METADATA: ("메타데이터 추출 중...", "Extracting metadata..."),
    Stage.DONE: ("✅ 모델 로드 완료!", "✅ Model loaded!"),
}


# Named steps inside a stage, so a slow first load (imports) or a merge moves and says why.
STEP_MESSAGES: dict[str, tuple[str, str]] = {
    "imports": ("준비 중: 라이브러리 불러오는 중 ({module})...", "Preparing: importing libraries ({module})..."),
    "checking": ("준비 중: 체크포인트 확인 중...", "Preparing: checking the checkpoint..."),
    # Said by the job thread while the model host is still starting (imports, ~4-10 s cold).
    "host": ("준비 중: 라이브러리 불러오는 중 ({elapsed}초)...", "Preparing: importing libraries ({elapsed} s)..."),
    # The weights stage after the last byte of an adapter: peft folds it into the base's weights.
    "merging": ("어댑터를 기본 모델에 병합 중...", "Merging the adapter into the base model..."),
}


# Said by ``loadmodel`` when a signal ends it before Django (and its catalogs) is set up.
CANCELLED_MESSAGE = ("로드가 취소되었습니다.", "Load cancelled.")


def stage_message(stage: Stage, lang: str = "ko", step: str = "", **fmt: Any) -> str:
    ko, en = STEP_MESSAGES[step] if step in STEP_MESSAGES else STAGE_MESSAGES[stage]
    text = en if lang.startswith("en") else ko
    return text.format(**fmt) if fmt else text


def overall_percent(stage: Stage, fraction: float) -> float:
    start, end = STAGE_SPAN[stage]
    fraction = min(max(fraction, 0.0), 1.0)
    return round(start + (end - start) * fraction, 2)


@dataclass
class WeightsDetail:
    """Byte-level detail of the weights stage; present in every event so viewers never guess."""

    shard: int = 0
    shards: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    bytes_per_s: float = 0.0
    eta_s: float | None = None
    # Which weights path ran and why ("stream" | "transformers"), what the stream had read before
    # the weights stage began, and the page cache state measured before reading ("hot" | "cold" |
    # "mixed" | "unknown"); set from the weights stage on (see engine.py).
    engine: str = ""
    engine_reason: str = ""
    prefetched_bytes: int = 0
    cache: str = ""
    staging_bytes: int = 0


@dataclass
class ProgressEvent:
    stage: Stage
    percent: float
    message: str
    detail: WeightsDetail = field(default_factory=WeightsDetail)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stage"] = self.stage.value
        return data


EventCallback = Callable[[ProgressEvent], None]
