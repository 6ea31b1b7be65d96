"""Small files of a git dir are read without trusting what is there: a FIFO, a link to a
device, a folder or a huge file is refused at once, never waited on or read whole."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shared.plain_file import NotPlainFile, read_plain, read_plain_text


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    head = tmp_path / "HEAD"
    head.write_bytes(b"ref: refs/heads/main\n")
    assert read_plain(head) == b"ref: refs/heads/main\n"
    assert read_plain_text(head) == "ref: refs/heads/main\n"
    (tmp_path / "empty").write_bytes(b"")
    assert read_plain(tmp_path / "empty") == b""


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "commondir"
    os.mkfifo(fifo)
    began = time.monotonic()
    with pytest.raises(NotPlainFile, match="not a regular file"):
        read_plain(fifo)
    assert time.monotonic() - began < 1


def test_a_link_is_not_followed_even_to_a_device(tmp_path: Path) -> None:
    link = tmp_path / "HEAD"
    link.symlink_to("/dev/zero")
    with pytest.raises(NotPlainFile, match="link"):
        read_plain(link)


def test_a_folder_or_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotPlainFile):
        read_plain(tmp_path)
    with pytest.raises(NotPlainFile):
        read_plain(Path("/dev/zero"))


def test_more_than_the_cap_is_refused_having_read_one_byte_past_it(tmp_path: Path) -> None:
    big = tmp_path / "alternates"
    big.write_bytes(b"x" * 101)
    with pytest.raises(NotPlainFile, match="more than 100 bytes"):
        read_plain(big, cap=100)
    big.write_bytes(b"x" * 100)
    assert read_plain(big, cap=100) == b"x" * 100


def test_what_is_not_there_is_the_usual_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_plain(tmp_path / "gone")
