"""The bench's counters live on a tmpfs where the machine has one, and go with the bench."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import stack


def test_counters_go_to_the_machines_tmpfs_linked_from_the_bench_folder(tmp_path: Path) -> None:
    if not (stack.on_tmpfs(stack.SHARED_MEMORY) and os.access(stack.SHARED_MEMORY, os.W_OK)):
        pytest.skip("this machine mounts no writable tmpfs at /dev/shm")
    folder = stack.counters_dir(tmp_path)
    try:
        assert folder.parent == stack.SHARED_MEMORY
        assert (tmp_path / "sqlcount").resolve() == folder
        (folder / "worker-1.json").write_text("{}")
        assert (tmp_path / "sqlcount" / "worker-1.json").read_text() == "{}"
    finally:
        bench = stack.Bench(None, tmp_path, "", "", "", folder, "")  # type: ignore[arg-type]
        stack.discard(bench)
    assert not folder.exists()
    assert not tmp_path.exists()


def test_without_a_tmpfs_the_counters_are_a_folder_of_the_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "SHARED_MEMORY", tmp_path / "no-such-mount")
    folder = stack.counters_dir(tmp_path)
    assert folder == tmp_path / "sqlcount"
    assert folder.is_dir()
    assert not folder.is_symlink()


def test_only_a_tmpfs_mount_point_counts(tmp_path: Path) -> None:
    assert stack.on_tmpfs(Path("/proc")) is False
    assert stack.on_tmpfs(tmp_path) is False
