"""shared.real_path answers exactly what Path.resolve and os.path.realpath answer.

Trees of folders, files and links (relative, absolute, dangling, looping) are drawn at
random, and paths through them (with ``.`` and ``..``, through links, past files, into
missing names); the kernel's reading must agree with the walk's, errors included.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.real_path import Resolver, realpath, resolved

NAMES = ("a", "b", "c", "d (deleted)")
Entry = tuple[str, str, str]  # (parent path, name, kind: dir | file | link:<target>)

targets = st.lists(st.sampled_from([*NAMES, "..", "."]), min_size=1, max_size=4).map("/".join)
entries = st.lists(
    st.tuples(
        st.lists(st.sampled_from(NAMES), max_size=2).map("/".join),
        st.sampled_from(NAMES),
        st.one_of(
            st.just("dir"),
            st.just("file"),
            targets.map(lambda t: f"link:{t}"),
            targets.map(lambda t: f"link:/ROOT/{t}"),
        ),
    ),
    max_size=12,
)
queries = st.lists(st.sampled_from([*NAMES, "..", ".", ""]), min_size=0, max_size=6).map("/".join)


def _build(root: Path, tree: list[Entry]) -> None:
    for parent, name, kind in tree:
        place = root / parent
        if not place.is_dir() or place.is_symlink() or os.path.lexists(place / name):
            continue
        if kind == "dir":
            (place / name).mkdir()
        elif kind == "file":
            (place / name).write_text("x")
        else:
            target = kind.removeprefix("link:").replace("/ROOT", str(root))
            (place / name).symlink_to(target)


def _outcome(read: object, arg: object) -> object:
    try:
        return read(arg)  # type: ignore[operator]
    except Exception as exc:  # the walk's error is the answer too
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(tree=entries, query=queries)
def test_the_kernel_and_the_walk_resolve_every_path_alike(tree: list[Entry], query: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _build(root, tree)
        path = root / query
        assert _outcome(resolved, path) == _outcome(Path.resolve, path)
        assert _outcome(realpath, str(path)) == _outcome(os.path.realpath, str(path))


def test_a_chain_of_links_lands_where_the_walk_lands(tmp_path: Path) -> None:
    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "hop").symlink_to("real")
    (tmp_path / "jump").symlink_to(tmp_path / "hop" / "deep")
    path = tmp_path / "jump" / ".." / "deep"
    assert resolved(path) == (tmp_path / "real" / "deep").resolve()
    assert realpath(str(path)) == str((tmp_path / "real" / "deep").resolve())


def test_a_missing_tail_is_kept_as_the_walk_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "here").symlink_to(tmp_path)
    path = tmp_path / "here" / "not-yet" / "file"
    assert resolved(path) == tmp_path.resolve() / "not-yet" / "file"


def test_a_loop_is_refused_as_the_walk_refuses_it(tmp_path: Path) -> None:
    (tmp_path / "one").symlink_to("two")
    (tmp_path / "two").symlink_to("one")
    with pytest.raises(RuntimeError, match="Symlink loop"):
        resolved(tmp_path / "one")


def test_a_name_ending_like_the_kernels_deleted_mark_resolves_alike(tmp_path: Path) -> None:
    folder = tmp_path / "gone (deleted)"
    folder.mkdir()
    assert resolved(folder) == folder.resolve()
    assert realpath(str(folder)) == str(folder.resolve())


def test_an_entry_unlinked_between_the_open_and_the_reading_goes_to_the_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel names an entry unlinked while open "<path> (deleted)": that is no
    place to bind or compare, so the walk answers (here, the path as it now stands)."""
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "link").symlink_to(moved)
    readlink = os.readlink

    def unlinked_meanwhile(path: str) -> str:
        return f"{moved} (deleted)" if path.startswith("/proc/self/fd/") else readlink(path)

    monkeypatch.setattr("shared.real_path.os.readlink", unlinked_meanwhile)
    assert resolved(tmp_path / "link") == moved
    assert realpath(str(tmp_path / "link")) == str(moved)


def test_a_relative_path_is_taken_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "inner").mkdir()
    monkeypatch.chdir(tmp_path / "inner")
    assert resolved(Path("..")) == tmp_path.resolve()
    assert realpath(".") == str((tmp_path / "inner").resolve())


@settings(max_examples=600, deadline=None)
@given(tree=entries, queries=st.lists(queries, min_size=1, max_size=4))
def test_the_resolver_of_many_paths_lands_where_the_walk_lands(
    tree: list[Entry], queries: list[str]
) -> None:
    """Its kept readings of folders, its bisection and its missing tails agree with the
    walk on every path, one resolver for all of them (as a turn's tool parts share one)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _build(root, tree)
        resolve = Resolver()
        for query in queries:
            for tail in ("", "/x", "/x/y/z"):
                path = f"{root}/{query}{tail}"
                assert _outcome(resolve, path) == _outcome(os.path.realpath, path), path


def test_a_dangling_link_past_the_folders_that_open_is_followed_as_the_walk_follows_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "link").symlink_to("/nowhere/new-file")
    assert Resolver()(str(tmp_path / "link")) == "/nowhere/new-file"
    assert Resolver()(str(tmp_path / "link" / "x")) == "/nowhere/new-file/x"


def test_a_deep_missing_path_is_resolved_in_a_few_system_calls(tmp_path: Path) -> None:
    deep = "a/" * 1900 + "x"
    resolve = Resolver()
    calls = 0
    kernel = resolve._kernel

    def counted(prefix: str) -> str | None:
        nonlocal calls
        calls += 1
        return kernel(prefix)

    resolve._kernel = counted  # type: ignore[method-assign]
    assert resolve(f"{tmp_path}/{deep}") == f"{tmp_path}/{deep}"
    assert calls < 20, calls
