"""Where a tree's symlinks lead, from the tree alone (shared/domain/tree_links.py)."""

from __future__ import annotations

import pytest

from shared.domain.tree_links import TreeLinks


def tree(links: dict[str, str], files: tuple[str, ...] = ("README.md", "src/calc.py")) -> TreeLinks:
    return TreeLinks.of([*files, *links], links)


@pytest.mark.parametrize(
    ("links", "escaping"),
    [
        ({"w": ".."}, ["w"]),
        ({"r": "/"}, ["r"]),
        ({"abs": "/work/ws/run/README.md"}, ["abs"]),  # absolute: never judged inside
        ({"sub/up": "..", "sub2/x": "../sub/up/.."}, ["sub2/x"]),  # a chain
        ({"d": ".", "l": "d/.."}, ["l"]),  # each harmless alone
        ({"docs/readme": "../README.md", "here": ".", "src/me": "../src"}, []),
        ({"a": "b/.."}, []),  # b does not exist: b/.. is read as names, the root
        ({"a": "b/..", "b": "."}, ["a"]),  # with b -> ., a leads out
        ({"x": "y", "y": "x"}, ["x", "y"]),  # a loop: refused
        ({"\udcff-name": "../.."}, ["\udcff-name"]),  # not UTF-8: still judged
        ({"deep": "src/../../x"}, ["deep"]),
    ],
)
def test_links_leading_out_of_the_tree_are_found(
    links: dict[str, str], escaping: list[str]
) -> None:
    assert [path for path, _ in tree(links).escaping()] == escaping


def test_a_path_is_resolved_through_the_links_on_its_way() -> None:
    links = tree({"up": "..", "in": "src"})
    assert links.resolves_inside("in/calc.py")
    assert not links.resolves_inside("up/other-run/README.md")
    assert links.resolves_inside("")  # the root itself


def test_a_chain_of_forty_links_is_followed_and_one_more_is_refused() -> None:
    chain = {f"l{i}": f"l{i + 1}" for i in range(40)} | {"l40": "README.md"}
    assert tree(chain).resolves_inside("l1")
    assert not tree(chain).resolves_inside("l0")
