"""Messages that remember how they were made, so every surface can say them in its language.

A user-facing message is written once, in Korean (the users' language), as a template with
named parameters. ``gettext_noop`` (the name Django's ``makemessages`` extracts) returns a
``Msg``: a ``str`` holding the Korean text, plus its template and parameters, which the Django
side translates (``locale/*/django.po``) for an English page or CLI. The pipeline itself needs
no Django.
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Mapping
from typing import Any


class _Keep(dict[str, Any]):
    """A parameter missing from a translation's format stays visible instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, params: Mapping[str, Any]) -> str:
    try:
        return string.Formatter().vformat(template, (), _Keep(params))
    except (ValueError, IndexError):  # a malformed template must never cost the user the error
        return template


def printable(value: str) -> str:
    """Names from a checkpoint folder reach pages, logs and terminals: escape control characters."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in value)


def env_language(environ: Mapping[str, str] | None = None) -> str:
    """A terminal's language, "en" or "ko" (Korean first), the way gettext reads the locale:
    LC_ALL, then LC_MESSAGES, then LANG, the first one set. "C"/"POSIX" name no language (a
    container's LC_ALL=C.UTF-8 is about encoding), so the next variable decides: with
    ``LC_ALL=C.UTF-8 LANG=en_US.UTF-8`` the user asked for English. ``loadmodel`` and the
    server's own terminal both follow it."""
    env = os.environ if environ is None else environ
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        if not value or value.split(".")[0].split("@")[0] in ("C", "POSIX"):
            continue
        return "en" if value.lower().startswith("en") else "ko"
    return "ko"


class Msg(str):
    template: str
    params: dict[str, Any]

    def __new__(cls, template: str, params: Mapping[str, Any]) -> Msg:
        safe = {k: v if isinstance(v, int | float) else printable(str(v)) for k, v in params.items()}
        text = super().__new__(cls, fill(template, safe))
        text.template, text.params = template, safe
        return text


def gettext_noop(template: str, **params: Any) -> Msg:
    """Mark ``template`` for translation and fill it in Korean now."""
    return Msg(template, params)


def parts(message: str) -> tuple[str, dict[str, Any]]:
    """(template, params) of a message; a plain string is its own template."""
    if isinstance(message, Msg):
        return message.template, dict(message.params)
    return str(message), {}


def render(template: str, params: Mapping[str, Any], translate: Callable[[str], str]) -> str:
    return fill(translate(template), params)


def as_note(message: str) -> dict[str, Any]:
    """A message kept in a job's metadata: its Korean text, and what English needs to say it."""
    template, params = parts(message)
    return {"text": str(message), "template": template, "params": params}
