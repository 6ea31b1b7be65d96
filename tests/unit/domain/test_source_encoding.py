"""A change may declare only an encoding that reads its bytes as the diff shows them."""

from __future__ import annotations

import pytest

from shared.domain.source_encoding import UNREAD, declared_coding, unreadable_coding


@pytest.mark.parametrize(
    ("head", "declared"),
    [
        (b"# coding: unicode_escape\nx = 1\n", "unicode_escape"),
        (b"#!/usr/bin/env python3\n# -*- coding: utf-7 -*-\n", "utf-7"),
        (b"\n# vim: set fileencoding=latin-1 :\n", "latin-1"),
        (b"  \t# coding=raw_unicode_escape\r", "raw_unicode_escape"),
        (b"# first\r# coding: utf-7\r", "utf-7"),  # a lone CR ends a line for Python too
        (b"x = 1\n# coding: utf-7\n", None),  # code first: Python reads no declaration
        (b"x = 1  # coding: utf-7\n", None),  # not a comment-only line
        (b"# one\n# two\n# coding: utf-7\n", None),  # a third line declares nothing
        (b"", None),
        (b"print(1)", None),
    ],
)
def test_the_declaration_is_read_from_the_first_two_lines_as_python_reads_it(
    head: bytes, declared: str | None
) -> None:
    assert declared_coding(head, whole=True) == declared


def test_python_agrees_on_what_is_declared() -> None:
    """The same files, decoded by Python's own reader of declarations."""
    import io
    import tokenize

    for head, declared in [
        (b"# first\n# coding: latin-1\nx = 1\n", "iso-8859-1"),
        (b"x = 1\n# coding: latin-1\n", "utf-8"),
    ]:
        assert tokenize.detect_encoding(io.BytesIO(head).readline)[0] == declared
        assert (declared_coding(head, whole=True) is None) == (declared == "utf-8")


@pytest.mark.parametrize(
    ("head", "declared"),
    [
        (b"# a comment that goes on", UNREAD),  # a declaration may come later in the line
        (b"# a comment\n", UNREAD),  # the second line starts past what was read
        (b"# a comment\n# and", UNREAD),
        (b"x = 1  # code that goes on", None),  # code: no declaration in it or after it
        (b"x = 1\n# and", None),
        (b"# coding: utf-7 and more", "utf-7"),
    ],
)
def test_a_head_cut_short_reads_unread_where_a_declaration_may_follow(
    head: bytes, declared: str | None
) -> None:
    assert declared_coding(head, whole=False) == declared


@pytest.mark.parametrize(
    "name", ["unicode_escape", "raw_unicode_escape", "utf-7", "UTF7", "utf-16", "rot13", UNREAD]
)
@pytest.mark.parametrize("importable", [True, False])
def test_a_codec_that_reads_bytes_otherwise_than_the_diff_shows_is_named(
    name: str, importable: bool
) -> None:
    assert unreadable_coding(name, importable=importable) is not None


@pytest.mark.parametrize(
    "name",
    ["utf-8", "UTF8", "utf_8", "utf-8-unix", "ascii", "US-ASCII", "latin-1", "Latin1",
     "iso-8859-1-unix", "ISO8859_1"],
)  # fmt: skip
@pytest.mark.parametrize("importable", [True, False])
def test_what_python_decodes_without_its_codec_registry_reads_as_shown(
    name: str, importable: bool
) -> None:
    assert unreadable_coding(name, importable=importable) is None


@pytest.mark.parametrize("name", ["cp1252", "iso8859-15", "646", "no-such-codec", "calctext"])
def test_a_module_may_declare_no_codec_an_earlier_import_could_register_or_redefine(
    name: str,
) -> None:
    """``encodings._cache['cp1252']`` pointed at unicode_escape, or a search function
    registered for ``calctext``, by a module imported first (red-team helper-121)."""
    assert unreadable_coding(name, importable=True) is not None


@pytest.mark.parametrize("name", ["cp1252", "iso8859-15", "no-such-codec"])
def test_a_file_run_by_its_path_may_declare_an_ascii_transparent_or_unknown_codec(
    name: str,
) -> None:
    """Nothing runs before its declaration is read: an unknown codec refuses to run, a
    single-byte one reads ASCII as itself (a Markdown heading '# Decoding: how' too)."""
    assert unreadable_coding(name, importable=False) is None


def test_a_long_blank_first_line_is_read_past() -> None:
    """A first line of 300,000 blanks (a lexer's test file) is read whole, and so is the
    declaration after it."""
    blank = b" " * 300_000 + b"\n"
    assert declared_coding(blank + b"x = 1\n", whole=True) is None
    assert declared_coding(blank + b"# coding: utf-7\n", whole=True) == "utf-7"
