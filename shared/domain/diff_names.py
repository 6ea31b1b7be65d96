"""The names a ``git diff`` text gives its files, read as git wrote them.

Git C-quotes a name holding a byte above ASCII (``docs/café.md``), a ``"``, a ``\\`` or
a control character: ``diff --git "a/docs/caf\\303\\251.md" "b/docs/caf\\303\\251.md"``,
and the same on ``---``/``+++``/``rename``/``copy`` lines. A reader taking those
characters as the name showed the approver git's octal instead of the name the plan
card shows (and the page's reader refused the whole patch). Bytes that are not UTF-8
read as ``\\xNN``: a name holding a real backslash never passes confinement, so the
two cannot be confused.

An unquoted name may itself hold `` b/``, so an unquoted header splits two ways; when
both sides are one name (every change but a rename or copy) that name is certain.
Otherwise the ``rename``/``copy`` or ``---``/``+++`` lines that follow must decide.
"""

from __future__ import annotations

from shared.domain.git_quoting import c_unquoted


def _quoted(text: str, start: int) -> tuple[str, int] | None:
    """The name a C-quoted string at ``text[start]`` (a ``"``) spells, and where it ends;
    None if it is not one."""
    found = c_unquoted(text, start)
    if found is None:
        return None
    return found[0].decode("utf-8", errors="backslashreplace"), found[1]


def git_name(raw: str) -> str:
    """A name as a ``---``/``+++``/``rename from``/``copy to`` line gives it: unquoted if
    git quoted it whole, else as written."""
    if raw.startswith('"'):
        found = _quoted(raw, 0)
        if found is not None and found[1] == len(raw):
            return found[0]
    return raw


def file_line_name(raw: str) -> str:
    """The name a ``---``/``+++`` line gives after its ``--- ``: git ends the line with a
    TAB when the name holds a space (for GNU patch), quoted or not; the page had drawn
    ``a b/x.py`` as ``a b/x.py<TAB>`` and a quoted one as git's octal (helper-114)."""
    return git_name(raw.removesuffix("\t"))


def same_name_sides(header: str) -> str | None:
    """The name both sides of ``header`` give (``diff --git a/N b/N``), or None."""
    sides = header_sides(header)
    return sides[0] if sides is not None and sides[0] == sides[1] else None


def header_sides(header: str) -> tuple[str, str] | None:
    """The old and new names (without ``a/``, ``b/``) of a ``diff --git`` header, either
    side quoted or not; None if it is no such header. Two unquoted sides that differ are
    split at the last `` b/`` (a guess the ``rename``/``copy`` lines correct)."""
    if not header.startswith("diff --git "):
        return None
    rest = header.removeprefix("diff --git ")
    if rest.startswith('"'):
        first = _quoted(rest, 0)
        if first is None or rest[first[1] : first[1] + 1] != " ":
            return None
        old, new_raw = first[0], rest[first[1] + 1 :]
    elif rest.endswith('"') and ' "' in rest:  # git quotes a name holding a `"`, so the
        cut = rest.index(' "')  # unquoted first side has none: the second starts there
        old, new_raw = rest[:cut], rest[cut + 1 :]
    else:
        half = (len(rest) - 5) // 2  # "a/" + name + " b/" + name
        name = rest[2 : 2 + half]
        if rest == f"a/{name} b/{name}":
            return name, name
        if not rest.startswith("a/") or " b/" not in rest:
            return None
        cut = rest.rindex(" b/")
        return rest[2:cut], rest[cut + 3 :]
    new = git_name(new_raw)
    if new == new_raw and new_raw.startswith('"'):
        return None  # a quoted side that does not read as one
    if not old.startswith("a/") or not new.startswith("b/"):
        return None
    return old[2:], new[2:]
