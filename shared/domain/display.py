"""What the approver sees is what was signed: agent-written text made safe to show. Pure.

Every string an agent wrote (plan design, file paths, reasons, risks, tests, commands,
errors) is attacker-controlled. Shown raw, a terminal obeys its escape sequences (move
the cursor, erase a line, set the title, make a hyperlink), a carriage return or
backspace overwrites what came before, and a bidi override makes
``.ssh/authorized_keys`` read as something else, in a terminal and in a browser alike.

:func:`visible` replaces each such character with a visible escape (``\\x1b``,
``\\u202e``) rather than deleting it, so the approver sees that something was there and
the text of an escape sequence (``[2J``, ``]8;;http://…``) is shown, inert, after it.
Escaping one character at a time is enough: a sequence starts with ESC or a C1 control,
and once those are escaped the rest is plain printable text.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from typing import Any

# Invisible or reordering characters whose Unicode category is not Cc/Cf/Zl/Zp.
_INVISIBLE_LETTERS = frozenset(
    {
        "\u115f",  # HANGUL CHOSEONG FILLER
        "\u1160",  # HANGUL JUNGSEONG FILLER
        "\u3164",  # HANGUL FILLER
        "\uffa0",  # HALFWIDTH HANGUL FILLER
        "\u2800",  # BRAILLE PATTERN BLANK
    }
)
# Invisible combining marks (category Mn, Default_Ignorable_Code_Point): they draw
# nothing, so ``calc.py`` and ``calc.py`` + a variation selector look the same.
_INVISIBLE_MARKS = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ, AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS (and U+180E, Cf)
    (0xFE00, 0xFE0F),  # VARIATION SELECTORS 1-16
    (0xE0100, 0xE01EF),  # VARIATION SELECTORS 17-256
)
# Cc: C0, DEL and C1 controls; Cf: bidi embeddings, overrides, isolates and marks,
# zero-width characters, soft hyphen, tags; Zl/Zp: line and paragraph separators;
# Cs: lone surrogates; Co: private use (glyphs no one agreed on); Cn: unassigned.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_NON_SPACING = frozenset({"Mn", "Me"})
MAX_STACKED_MARKS = 4
"""Combining marks one character may carry before the rest are escaped. Real text
stacks two or three (Vietnamese, Indic scripts); a tower of hundreds (Zalgo) draws, in a
browser, over the lines above and below it: over another file of the plan card."""
_MULTILINE_KEEPS = frozenset({"\n", "\t"})


def _invisible(char: str) -> bool:
    point = ord(char)
    return char in _INVISIBLE_LETTERS or any(lo <= point <= hi for lo, hi in _INVISIBLE_MARKS)


def is_unsafe(char: str) -> bool:
    """True for a character that may not reach a screen as itself."""
    return _invisible(char) or unicodedata.category(char) in _UNSAFE_CATEGORIES


def escape_char(char: str) -> str:
    """The visible spelling of one character: ``\\n``, ``\\x1b``, ``\\u202e``, ``\\U000e0041``."""
    named = _NAMED.get(char)
    if named is not None:
        return named
    point = ord(char)
    if point <= 0xFF:
        return f"\\x{point:02x}"
    if point <= 0xFFFF:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def visible(value: object, *, multiline: bool = False) -> str:
    """``value`` as text with every unsafe character escaped visibly.

    ``multiline`` keeps newlines and tabs (for a design shown as a block); everywhere
    else (a path, a table cell, a one-line message) they are escaped too, so one field
    can never pose as another line of the card.
    """
    text = value if isinstance(value, str) else str(value)
    ascii_only = text.isascii()
    if ascii_only and text.isprintable():
        return text  # the common case: nothing to escape, no marks to count
    # ASCII holds no mark: only its controls are judged (no table built for Unicode)
    first, run = _ASCII_JUDGED[multiline] if ascii_only else _judged(multiline)
    found = first.search(text)
    if found is None:
        return text  # every character plain (each is met by a C scan, not by Python)
    keep = _MULTILINE_KEEPS if multiline else frozenset()
    kinds = _KINDS
    shown: list[str] = []
    done = 0
    while found is not None:
        start = found.start()
        ran = run.match(text, start)
        end = ran.end() if ran is not None else start + 1
        shown.append(text[done:start])
        stacked = 0  # the character before a run is plain: not a mark
        for c in text[start:end]:
            kind = kinds.get(c)
            if kind is None:
                kind = _kind_of(c)
            stacked = stacked + 1 if kind & _MARK else 0
            safe = c in keep or (not kind & _UNSAFE and stacked <= MAX_STACKED_MARKS)
            shown.append(c if safe else escape_char(c))
        done = end
        found = first.search(text, end)
    shown.append(text[done:])
    return "".join(shown)


_ASCII_JUDGED = {
    multiline: (re.compile(controls), re.compile(controls + "+"))
    for multiline, controls in (
        (False, "[\x00-\x1f\x7f]"),
        (True, "[\x00-\x08\x0b-\x1f\x7f]"),  # tab and newline kept
    )
}
"""The characters :func:`visible` judges in ASCII text: its controls."""

_MARK = 1  # a combining mark (Mn, Me): stacks on the character before it
_UNSAFE = 2  # :func:`is_unsafe`
_KINDS: dict[str, int] = {}
"""Each character's kind, as met: judging one took two Unicode lookups and a range scan
per character, about 1.3 us, and a run page drew megabytes of an agent's non-ASCII
text through :func:`visible` (15 s of CPU for five plans at the contract's maxima;
red-team helper-127). Cleared past :data:`KINDS_KEPT` characters (text of every script
at once), so it stays small."""
KINDS_KEPT = 1 << 16


def _kind(char: str) -> int:
    return (_MARK if unicodedata.category(char) in _NON_SPACING else 0) | (
        _UNSAFE if is_unsafe(char) else 0
    )


def _kind_of(char: str) -> int:
    kind = _kind(char)
    if len(_KINDS) >= KINDS_KEPT:
        _KINDS.clear()
    _KINDS[char] = kind
    return kind


@functools.cache
def _judged(multiline: bool) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Patterns for the characters :func:`visible` must judge one by one: one such
    character, and a run of them.

    Every character of the Basic Multilingual Plane whose kind is not plain (unsafe, or
    a mark that may stack), and every character past it (judged one by one, as before).
    Anything else is plain and not a mark, so it ends a stack of marks: the text between
    runs is copied as it is, found by ``re``'s charset scan at C speed. A line of 2,000
    letters with one combining mark cost 0.2 ms through a Python loop over every
    character; a 4 MiB patch of such lines, a second of an API worker per run page.
    Built once per process from :mod:`unicodedata` (about 50 ms), so it agrees with
    :func:`_kind_of` character for character; ``multiline``'s kept newlines and tabs
    are plain there.
    """
    keep = _MULTILINE_KEEPS if multiline else frozenset()
    spans: list[str] = []
    start: int | None = None
    for point in range(0x10001):
        char = chr(point) if point < 0x10000 else ""
        judged = bool(char) and char not in keep and bool(_kind(char))
        if judged and start is None:
            start = point
        elif not judged and start is not None:
            spans.append(f"{re.escape(chr(start))}-{re.escape(chr(point - 1))}")
            start = None
    judged_class = "[" + "".join(spans) + "\U00010000-\U0010ffff]"
    return re.compile(judged_class), re.compile(judged_class + "+")


def visible_data(value: Any) -> Any:
    """A JSON-like value with every string (keys too) passed through :func:`visible`."""
    if isinstance(value, dict):
        return {visible(k): visible_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [visible_data(v) for v in value]
    if isinstance(value, str):
        return visible(value)
    return value


_SLASH_LIKE = frozenset("\u2044\u2215\u2571\u29f8\u29f9\uff0f\u1735\u2cc6")
"""Characters drawn like ``/`` (fraction and division slashes, fullwidth solidus...)."""


_LATIN_LOOKALIKES = frozenset(
    {"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE", "COPTIC", "LISU", "TIFINAGH", "CANADIAN"}
)
"""Scripts with letters drawn exactly like Latin ones (CYRILLIC SMALL LETTER A, GREEK
SMALL LETTER OMICRON)."""


def _mixed_script(name: str) -> bool:
    """Letters of two scripts that look alike in one name (``c<CYRILLIC A>lc.py``, or
    ``<CYRILLIC A>/calc.py``): the whole path is judged, so a folder named by one Cyrillic
    letter is caught too. A Russian or Greek name under a Latin folder is drawn
    escaped as well: safe, if less readable."""
    scripts = {
        unicodedata.name(c, "").split(" ", 1)[0] for c in name if c.isalpha() and not c.isascii()
    }
    if any(c.isascii() and c.isalpha() for c in name):
        scripts.add("LATIN")
    return len(scripts & _LATIN_LOOKALIKES) > 1


def _foreign_in_a_latin_stem(name: str) -> bool:
    """A dot-separated part of a component that mixes ASCII letters with a letter of any
    script but Latin, a digit that is not ASCII, or a mark, symbol or punctuation that
    is not ASCII: a Myanmar WA or a Telugu zero drawn as ``o`` in ``config.py`` or
    ``pyproject.toml``, an Arabic-Indic zero as the dot of ``calc.py`` (helper-115), a
    Hebrew paseq or a DIVIDES sign as the ``l`` of ``calc.py`` (helper-117). A part in
    one other script (``docs/<Japanese>.md``) is drawn as it is."""
    for component in name.split("/"):
        for part in component.split("."):
            if not any(c.isascii() and c.isalpha() for c in part):
                continue
            for c in part:
                if c.isascii():
                    continue
                kind = unicodedata.category(c)
                if kind == "Nd" or kind[0] in "PSM":
                    return True
                if c.isalpha() and not unicodedata.name(c, "").startswith("LATIN"):
                    return True
    return False


_DRAWN_LATIN = frozenset(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0455\u0456\u0458\u0501\u04bb\u04cf\u051b\u051d"
    "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u0423\u0405\u0406\u0408\u051a\u051c"
    "\u03bf\u03b1\u03bd\u03b9\u03ba\u03c5\u03c1"
    "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7"
)
"""Cyrillic and Greek letters drawn like Latin ones (CYRILLIC SMALL LETTER A, IE, O, ER,
ES...; GREEK SMALL LETTER OMICRON, ALPHA, NU...): a name spelled in them alone reads as
a Latin name (``exec.py`` in Cyrillic; helper-114)."""

_UNUSUAL_LATIN = (
    (0x01C0, 0x01C3),  # click letters (DENTAL CLICK drawn as l)
    (0x0250, 0x02FF),  # IPA extensions, modifier letters (SCRIPT G drawn as g)
    (0x1D00, 0x1DBF),  # phonetic extensions (SMALL CAPITAL C drawn as c)
    (0xA720, 0xA7FF),  # Latin extended-D (SMALL CAPITAL S drawn as s)
    (0xAB30, 0xAB6F),  # Latin extended-E
)
"""Latin letters no file name needs that are drawn like plain ones (helper-114)."""


def _drawn_as_latin(name: str) -> bool:
    """A name whose non-ASCII letters are all drawn like Latin ones, or that holds a
    Latin letter drawn like a plainer one."""
    foreign = [c for c in name if c.isalpha() and not c.isascii()]
    if foreign and all(c in _DRAWN_LATIN for c in foreign):
        return True
    return any(low <= ord(c) <= high for c in foreign for low, high in _UNUSUAL_LATIN)


def lookalike_name(name: str) -> bool:
    """Whether ``name`` may be drawn like another name: it holds a space separator other
    than U+0020 (a no-break space draws as a blank), blanks a page collapses (leading,
    trailing, two in a row), a character drawn like ``/``, Latin mixed with a script
    whose letters look Latin (:func:`_mixed_script`), or is not in NFKC (a
    decomposed ``é`` draws as the composed one; a fullwidth letter as the letter). A
    repository may track both spellings, and two plan revisions deleting one and then
    the other were drawn alike (red-team helpers 106, 108): such a name is shown with
    those characters escaped (:func:`shown_name_text`)."""
    if any(c != " " and unicodedata.category(c) == "Zs" for c in name):
        return True
    if name != name.strip(" ") or "  " in name:  # a page collapses the blanks (helper-108)
        return True
    if any(c in _SLASH_LIKE for c in name):  # (src DIVISION SLASH calc.py: a file in src/)
        return True
    if _mixed_script(name) or _drawn_as_latin(name):  # (c CYRILLIC-A lc.py; helpers 109, 114)
        return True
    if _foreign_in_a_latin_stem(name):  # (c MYANMAR-WA nfig.py; helper-115)
        return True
    return unicodedata.normalize("NFKC", name) != name  # NFC, and compatibility forms


def shown_name_text(name: str) -> str:
    """A lookalike ``name`` as a JSON string in ASCII (``"old\\u00a0notes.md"``); any other
    as a JSON string of its own characters."""
    return json.dumps(name, ensure_ascii=lookalike_name(name))
