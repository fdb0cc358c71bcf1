"""What a job's ``message`` can say, so a viewer in another language reads it in its own.

``message`` is stored once, as words: a stage's in the requester's language (``job.lang``), an
outcome's in Korean or the requester's. Every message a job can hold is known here as a pair of
templates (Korean, English); a stored text is matched against both and said again in the
viewer's language, its parameters (a device, a module, a model's name) carried over.
"""

from __future__ import annotations

import functools
import re

from loader.jobs.i18n import in_lang
from loader.pipeline.events import CANCELLED_MESSAGE, STAGE_MESSAGES, STEP_MESSAGES
from loader.pipeline.i18n import fill, gettext_noop

PREPARING = gettext_noop("준비 중...")
CANCELLING = gettext_noop("취소하는 중...")
CANCELLED = gettext_noop("로드가 취소되었습니다.")
CANCELLED_DROPPED = gettext_noop(
    "로드가 취소되었습니다. 이전 모델 {name}은(는) 이 로드를 위해 이미 언로드되어, 지금 로드된 모델이 없습니다."
)
INTERRUPTED = gettext_noop("로드가 중단되었습니다(서버 또는 프로세스 종료).")
FAILED = gettext_noop("❌ 오류: {message}")  # said from the error's own template, not matched

_SAID_BY_SERVICES = (PREPARING, CANCELLING, CANCELLED, CANCELLED_DROPPED, INTERRUPTED)


def _pattern(template: str) -> re.Pattern[str]:
    """``template`` as a regular expression whose named groups are its parameters."""
    pieces, seen, regex = re.split(r"\{(\w+)\}", template), set(), ""
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            regex += re.escape(piece)
        else:
            regex += f"(?P={piece})" if piece in seen else f"(?P<{piece}>.+?)"
            seen.add(piece)
    return re.compile(regex, re.DOTALL)


@functools.cache
def _pairs() -> tuple[tuple[str, str, re.Pattern[str], re.Pattern[str]], ...]:
    """(Korean, English, their patterns) of every message a job can hold; read after the catalogs load."""
    pairs = [*STAGE_MESSAGES.values(), *STEP_MESSAGES.values(), CANCELLED_MESSAGE]
    pairs += [(str(ko), in_lang(ko, {}, "en")) for ko in _SAID_BY_SERVICES]  # {name} kept: a missing key stays
    return tuple((ko, en, _pattern(ko), _pattern(en)) for ko, en in pairs)


def reworded(text: str, lang: str) -> str:
    """``text`` (a stored job message, in either language) said in ``lang``; unknown text as it is."""
    english = lang.startswith("en")
    for ko, en, ko_pattern, en_pattern in _pairs():
        for pattern in (en_pattern, ko_pattern) if english else (ko_pattern, en_pattern):
            if match := pattern.fullmatch(text):
                return fill(en if english else ko, match.groupdict())
    return text
