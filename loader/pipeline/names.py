"""How a folder's name is shown: the characters it really has, never what they pretend to be.

Whoever made a folder chose its name. Shown as it is, ``safe-`` + U+202E + ``3amall`` reads
"safe-llama3" (the override reverses what follows it), ``llama`` + U+200B + ``3`` and ``ll`` +
Cyrillic ``а`` + ``ma3`` both read "llama3", and on a terminal ``ESC]0;…BEL`` retitles the window.
``visible_name`` keeps every ordinary character and writes each deceptive one as ``⟨U+XXXX⟩``:
controls, format and direction characters, non-ASCII spaces, invisible letters, characters that
imitate ASCII (fullwidth ``ｌ``, mathematical ``𝐥``) and the odd letters of a word that mixes
Latin, Cyrillic or Greek. ``⟨`` itself is written that way too, so two different names never
show the same text. The name stays the key that loads; only what people read changes.

Only the standard library: the pipeline, the catalog, the web and the CLI all show names.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from typing import NamedTuple

from loader.pipeline.i18n import gettext_noop, printable

OPEN = "⟨"  # escapes start with it, so a literal one is escaped too (the display stays one-to-one)

# Printable by Python's rules, yet nothing shows: fillers, blanks, joiners and variation selectors.
_INVISIBLE = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2800, 0x3164, 0xFFA0]
    + list(range(0xFE00, 0xFE10))
    + list(range(0xE0100, 0xE01F0))
)
# Scripts whose letters pass for one another (Latin "a", Cyrillic "а", Greek "α"...).
_CONFUSABLE_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC")
# Cyrillic and Greek letters drawn like a Latin one: a word made only of them passes for Latin.
_LATIN_LOOKALIKES = frozenset(
    "аеорсухіјѕԁӏԛԝһԍьАВЕКМНОРСТХІЈЅԌѴ"  # Cyrillic
    "αοιυνκρτχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"  # Greek
)

INVISIBLE = "invisible"
LOOKALIKE = "lookalike"
# What a name warning says; the page has the same texts (templates/loader/page.html).
WARNINGS = {
    INVISIBLE: gettext_noop("보이지 않는 문자나 방향 제어 문자가 든 이름"),
    LOOKALIKE: gettext_noop("다른 문자 체계나 비슷해 보이는 문자가 섞인 이름"),
}


class NameView(NamedTuple):
    display: str  # what to show: deceptive characters as ⟨U+XXXX⟩
    warning: str | None  # INVISIBLE, LOOKALIKE or None


def _code(c: str) -> str:
    return f"{OPEN}U+{ord(c):04X}⟩"


def _hidden(c: str) -> bool:
    """Shows nothing, or moves or hides what follows: controls, format/bidi, odd spaces, fillers."""
    return c != " " and (not c.isprintable() or ord(c) in _INVISIBLE)


def _imitates_ascii(c: str) -> bool:
    """Fullwidth, mathematical, ligature and other compatibility forms of plain ASCII text."""
    if c.isascii():
        return False
    folded = unicodedata.normalize("NFKC", c)
    return folded != c and folded.isascii() and folded.isprintable()


def _script(c: str) -> str | None:
    """The confusable script of a letter (from its Unicode name), or None."""
    if not unicodedata.category(c).startswith("L"):
        return None
    first = unicodedata.name(c, "").split(" ", 1)[0]
    return first if first in _CONFUSABLE_SCRIPTS else None


def _words(name: str) -> list[tuple[int, int]]:
    """(start, end) of each run of letters and marks: look-alikes hide inside a word."""
    spans, start = [], None
    for i, c in enumerate(name):
        if unicodedata.category(c)[0] in "LM":
            start = i if start is None else start
        elif start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(name)))
    return spans


def _odd_letters(name: str) -> tuple[set[int], bool]:
    """Positions of letters of a minority script inside a mixed word, and whether any word could
    pass for Latin while it is not (mixed, or wholly Cyrillic/Greek look-alikes)."""
    odd: set[int] = set()
    deceptive = False
    for start, end in _words(name):
        scripts = {i: s for i in range(start, end) if (s := _script(name[i])) is not None}
        counts = Counter(scripts.values())
        if len(counts) > 1:
            # The word's main script stays as written; ties keep Latin (what the word imitates).
            main = max(counts, key=lambda s: (counts[s], s == "LATIN"))
            odd.update(i for i, s in scripts.items() if s != main)
            deceptive = True
        elif counts and "LATIN" not in counts and all(name[i] in _LATIN_LOOKALIKES for i in scripts):
            deceptive = True
    return odd, deceptive


def name_view(name: str) -> NameView:
    """``name`` made safe to read, and why it needed it (the more dangerous reason first)."""
    odd, deceptive = _odd_letters(name)
    out, hidden = [], False
    for i, c in enumerate(name):
        if _hidden(c):
            hidden = True
            out.append(_code(c))
        elif c == OPEN or i in odd:
            out.append(_code(c))
        elif _imitates_ascii(c):
            deceptive = True
            out.append(_code(c))
        else:
            out.append(c)
    warning = INVISIBLE if hidden else LOOKALIKE if deceptive else None
    return NameView("".join(out), warning)


def visible_name(name: str) -> str:
    """What to show for a folder's name on a page, in a list or on a terminal."""
    return name_view(name).display


def terminal_json(text: str) -> str:
    """JSON text from ``json.dumps(..., ensure_ascii=False)`` with every character a terminal
    would act on (C1 controls such as U+009B CSI, bidi overrides, line separators) written as a
    ``\\u`` escape: the same JSON value, nothing for the terminal to execute. Outside strings JSON
    text has only printable ASCII and whitespace, so any other character is inside a string."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c in "\n\t " or c.isprintable():
            out.append(c)
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:  # a surrogate pair, as JSON spells characters beyond the BMP
            high, low = divmod(ord(c) - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}")
    return "".join(out)


def terminal_value(value: object) -> str:
    """Any other value from a checkpoint (architecture, adapter base, a message) for a terminal."""
    return printable(str(value))
