"""Saying a pipeline or service message in the viewer's language (Korean first, English).

Messages are Korean templates with parameters (``pipeline.i18n.gettext_noop``); Django's
catalog (``locale/en/LC_MESSAGES/django.po``) holds their English. Snapshots broadcast to every
viewer carry both languages; HTTP answers and the CLI pick one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils import translation

from loader.pipeline.i18n import parts, render

LANGS = ("ko", "en")


def in_lang(template: str, params: Mapping[str, Any], lang: str) -> str:
    with translation.override(lang):
        return render(template, params, translation.gettext)


def both(template: str, params: Mapping[str, Any] | None = None) -> dict[str, str]:
    return {lang: in_lang(template, params or {}, lang) for lang in LANGS}


def here(message: str) -> str:
    """``message`` in the active language (the request's, or the CLI's after ``override``)."""
    template, params = parts(message)
    return render(template, params, translation.gettext)
