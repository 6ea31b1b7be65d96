"""Is what a patch actually changed what the approved plan said? Pure: no IO.

The patch text is never trusted: a diff without ``diff --git`` headers, ``rename
from/to`` lines or a mode line says something else than a header scan sees. ApplyPatchST
applies the patch to the index and asks git what changed (``git diff --cached -M -C
--raw -z`` and ``--numstat -z``); this module parses git's answer and judges it against
the plan and the policy. Every violation names its rule:

- ``outside_plan``: a path the plan does not list, or another kind of change than the
  plan says (a rename is judged as the deletion of its source and the addition of its
  target, so a plan's rename matches git's rename, or a delete and an add);
- ``forbidden_path``: either side of a rename or copy matches a forbidden pattern;
- ``confinement``: a path that is absolute, climbs out with ``..`` or reaches ``.git``,
  or one ``git apply`` refused to write (:func:`confinement_refusal`);
- ``symlink``: a symlink (mode 120000), unless the policy allows symlinks and its target
  stays inside the worktree;
- ``submodule``: a gitlink (mode 160000) on either side;
- ``executable``: a new executable (mode 100755), when the policy refuses them (they
  are always reported);
- ``unknown_change``: a status git should never report here (unmerged, unknown);
- ``max_files`` and ``max_lines``; and ``max_patch_bytes`` (:data:`MAX_PATCH_BYTES_RULE`),
  judged by the worker as it reads git's patch, since one line may be of any length,
  and ``max_file_bytes`` (:data:`MAX_FILE_BYTES_RULE`), each file's staged blob, judged
  before the worker reads any;
- ``source_encoding`` (:data:`SOURCE_ENCODING_RULE`): a file whose first two lines
  declare an encoding Python would read its bytes by otherwise than the diff shows
  them (:mod:`shared.domain.source_encoding`);
- ``path_encoding`` (:data:`PATH_ENCODING_RULE`): a name that is not UTF-8 text. kodo
  reads git's names as UTF-8, a byte that is not read as U+FFFD: two names could read
  as one, and as a planned one. Judged first, before any rule reads a name.

A patch may leave planned paths alone (they are reported, not refused): the plan
bounds what may change, it does not force every change.
"""

from __future__ import annotations

import fnmatch
import posixpath
import sys
from dataclasses import dataclass, replace
from typing import Any

from shared.domain.policy import Policy, Violation, fold, forbidden, unconfined
from shared.domain.source_encoding import (
    IMPORTED_SUFFIXES,
    SOURCE_ENCODING_RULE,
    unreadable_coding,
)

PLAN_KINDS = ("add", "modify", "delete", "rename")
SYMLINK = "120000"
GITLINK = "160000"
EXECUTABLE = "100755"
MAX_PATCH_BYTES_RULE = "max_patch_bytes"
MAX_FILE_BYTES_RULE = "max_file_bytes"
PATH_ENCODING_RULE = "path_encoding"
PATH_COLLISION_RULE = "path_collision"
UNREADABLE_NAME = "\ufffd"
"""What a byte that is not UTF-8 in a name git gives reads as (and U+FFFD itself)."""
_KNOWN_STATUS = frozenset("AMDRCT")


@dataclass(frozen=True)
class PlannedChange:
    """One file entry of an approved plan; ``source`` is a rename's ``from``."""

    path: str
    change: str
    source: str | None = None


def planned_changes(plan: dict[str, Any]) -> list[PlannedChange]:
    """The plan's file entries (a validated plan; anything malformed is skipped)."""
    found: list[PlannedChange] = []
    files = plan.get("files")
    for entry in files if isinstance(files, list) else []:
        if not isinstance(entry, dict):
            continue
        path, change, source = entry.get("path"), entry.get("change"), entry.get("from")
        if isinstance(path, str) and change in PLAN_KINDS:
            found.append(
                PlannedChange(path, str(change), source if isinstance(source, str) else None)
            )
    return found


def _named_paths(planned: PlannedChange) -> list[str]:
    return [planned.path] + ([planned.source] if planned.source is not None else [])


def check_plan(policy: Policy, plan: dict[str, Any]) -> list[Violation]:
    """A plan is never shown for approval if a path it names breaks the policy."""
    entries = planned_changes(plan)
    found: list[Violation] = []
    for entry in entries:
        for path in _named_paths(entry):
            why = unconfined(path)
            if why is not None:
                found.append(Violation("confinement", f"{path}: {why}", (path,)))
            elif (pattern := forbidden(path, policy.refused_paths())) is not None:
                found.append(Violation("forbidden_path", f"{path} matches {pattern}", (path,)))
    if len(entries) > policy.max_files:
        found.append(
            Violation(
                "max_files", f"the plan touches {len(entries)} files (max {policy.max_files})"
            )
        )
    return found


@dataclass(frozen=True)
class IndexChange:
    """One entry of ``git diff --cached --raw``: what git says a patch changed.

    ``source`` is the old path of a rename (R) or copy (C). Counts are None for a
    binary file. ``link_target`` is the blob of a new symlink, read from the index, and
    ``link_inside`` what the filesystem said about where it resolves (None: not asked).
    ``new_size``: the new blob's size in bytes as git read it with the blob (None: not
    read), so the check of the bytes on disk needs no second git for it. ``coding``: the
    encoding the new blob's first two lines declare (None: none, or not read).
    """

    status: str
    path: str
    old_mode: str
    new_mode: str
    new_blob: str = ""
    source: str | None = None
    added: int | None = 0
    removed: int | None = 0
    link_target: str | None = None
    link_inside: bool | None = None
    new_size: int | None = None
    coding: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "path": self.path,
            "from": self.source,
            "old_mode": self.old_mode,
            "new_mode": self.new_mode,
            "added": self.added,
            "removed": self.removed,
        }


def parse_raw(out: str) -> list[IndexChange]:
    """Parse ``git diff --raw -z`` (``:old new oldsha newsha S\\0path\\0[path\\0]``)."""
    tokens = out.split("\0")
    changes: list[IndexChange] = []
    i = 0
    while i < len(tokens):
        if not tokens[i].startswith(":"):
            i += 1
            continue
        change, i = _raw_record(tokens, i)
        changes.append(change)
    return changes


def _raw_record(tokens: list[str], i: int) -> tuple[IndexChange, int]:
    """The ``--raw`` record whose head is ``tokens[i]``, and the index after its paths."""
    head = tokens[i]
    i += 1
    fields = head[1:].split(" ")
    if len(fields) < 5 or not fields[4]:
        raise ValueError(f"unexpected git --raw record {head!r}")
    old_mode, new_mode, _old_blob, new_blob, status = fields[:5]
    letter = status[0]
    source: str | None = None
    if letter in "RC":
        source, path = tokens[i], tokens[i + 1]
        i += 2
    else:
        path = tokens[i]
        i += 1
    return IndexChange(letter, path, old_mode, new_mode, new_blob, source), i


def parse_numstat(out: str) -> dict[str, tuple[int | None, int | None]]:
    """Parse ``git diff --numstat -z`` into (added, removed) per path; None = binary."""
    return _numstat(out.split("\0"))


def _numstat(tokens: list[str]) -> dict[str, tuple[int | None, int | None]]:
    counts: dict[str, tuple[int | None, int | None]] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token:
            continue
        added, removed, path = token.split("\t", 2)
        if path == "":  # a rename or copy: the two paths follow
            path = tokens[i + 1]
            i += 2
        counts[path] = (
            int(added) if added.isdigit() else None,
            int(removed) if removed.isdigit() else None,
        )
    return counts


def parse_raw_numstat(out: str) -> list[IndexChange]:
    """Parse ``git diff --raw --numstat -z``: each change with its line counts.

    git writes every ``--raw`` record, then every ``--numstat`` one, with no separator.
    Read in order, a record's paths are taken as paths whatever they start with, so the
    first token at a record's place that is not a ``:`` head starts the counts (they
    begin with a digit or ``-``). One git process and one rename detection for both.
    """
    tokens = out.split("\0")
    changes: list[IndexChange] = []
    i = 0
    while i < len(tokens) and tokens[i].startswith(":"):
        change, i = _raw_record(tokens, i)
        changes.append(change)
    return with_counts(changes, _numstat(tokens[i:]))


def unreadable_names(changes: list[IndexChange]) -> list[str]:
    """The names (either side of a rename) that are not UTF-8 text as git gave them."""
    found = {
        name
        for change in changes
        for name in (change.path, change.source)
        if name is not None and UNREADABLE_NAME in name
    }
    return sorted(found)


class RawRecords:
    """Counts the ``--raw`` records of a ``git diff --raw --numstat -z`` listing fed to it
    a chunk at a time, holding none of it: a listing is counted against ``max_files``
    before it is kept or parsed (20,000 files at 4 kB paths, read whole, grew a worker by
    199 MB before their refusal; 200,000 parsed made 237 MB of objects).

    Fields end at NULs. A record is a head (``:`` modes, ids and a status letter) and
    its path, two for a rename or copy, so a path that starts with ``:`` is never taken
    for a head; the first field after a record that is no head (numstat's counts)
    ends the count. Only a head is held while it arrives (at most :data:`HEAD_BYTES`).
    """

    HEAD_BYTES = 256
    """Longer than any head git writes (two modes, two 64-digit ids, a status and score)."""

    def __init__(self) -> None:
        self.count = 0
        self._head = bytearray()
        self._paths_left = 0
        self._done = False

    def feed(self, chunk: bytes) -> None:
        pos = 0
        while pos < len(chunk) and not self._done:
            nul = chunk.find(b"\0", pos)
            if self._paths_left:
                if nul < 0:
                    return  # the rest of this chunk is inside a path
                self._paths_left -= 1
                pos = nul + 1
                continue
            self._head += chunk[pos:] if nul < 0 else chunk[pos:nul]
            if len(self._head) > self.HEAD_BYTES or not self._head.startswith(b":"):
                self._done = True  # numstat's first field: the records are all counted
                return
            if nul < 0:
                return  # the head goes on in the next chunk
            head, pos = bytes(self._head), nul + 1
            self._head.clear()
            letter = head[head.rfind(b" ") + 1 :][:1]
            self._paths_left = 2 if letter in (b"R", b"C") else 1
            self.count += 1


def with_counts(
    changes: list[IndexChange], counts: dict[str, tuple[int | None, int | None]]
) -> list[IndexChange]:
    """Each change with its line counts from ``--numstat`` (0 when git listed none)."""
    return [
        replace(change, added=pair[0], removed=pair[1])
        for change in changes
        for pair in [counts.get(change.path, (0, 0))]
    ]


@dataclass(frozen=True)
class ChangeReport:
    """The verdict on what a patch changed, and what the step reports either way."""

    violations: list[Violation]
    executables: tuple[str, ...]
    untouched: tuple[str, ...]  # planned paths the patch left alone
    lines: int

    def to_json(self) -> dict[str, Any]:
        return {
            "violations": [v.to_json() for v in self.violations],
            "new_executables": list(self.executables),
            "planned_but_untouched": list(self.untouched),
            "lines": self.lines,
        }


def _effects(change: IndexChange) -> list[tuple[str, str]]:
    """(path, add|modify|delete) pairs: what the change did to each path."""
    if change.status == "A":
        return [(change.path, "add")]
    if change.status == "D":
        return [(change.path, "delete")]
    if change.status == "R" and change.source is not None:
        return [(change.source, "delete"), (change.path, "add")]
    if change.status == "C":
        return [(change.path, "add")]
    return [(change.path, "modify")]  # M, T (a type change modifies the path)


class FoldedTwins:
    """The names a change brings into the tree (added, renamed or copied to) that are
    another name of the resulting tree on a case-folding or normalizing file system
    (macOS, Windows: ``Calc.py`` and ``calc.py``; ``café.py`` composed and decomposed,
    drawn alike): a developer checking the branch out there gets the new file's bytes in
    the other, which no plan named and no verification ran (a red-team pass delivered
    both). A folder counts as a name: ``Src/x.py`` beside ``src/``.

    Fed the resulting tree's other names one at a time (a tree of any size is never
    held): only the new names' folded forms are kept. Judged twice: a plan's names
    against the base tree before the plan is shown for approval, and the patch's against
    its tree before it lands.
    """

    def __init__(self, effects: list[tuple[str, str]]) -> None:
        """``effects``: (path, add|modify|delete) pairs, as :func:`_effects` gives."""
        self._gone = {path for path, what in effects if what == "delete"}
        new = [path for path, what in effects if what == "add"]
        self._new = set(new)
        self._keys: dict[str, str] = {}  # a new name's (or its folder's) folded form -> it
        self.found: dict[str, str] = {}  # a new name -> the name it is a twin of
        for path in new:
            for name in _names_of(path):
                self._see(name, self._keys.setdefault(fold(name), name))

    @classmethod
    def of_changes(cls, changes: list[IndexChange]) -> FoldedTwins:
        """The names a patch brings, as git staged it."""
        return cls([effect for change in changes for effect in _effects(change)])

    @classmethod
    def of_plan(cls, plan: dict[str, Any]) -> FoldedTwins:
        """The names a plan says it brings (added, or renamed to)."""
        allowed = _planned_effects(planned_changes(plan))
        return cls([(path, kind) for path, kinds in allowed.items() for kind in sorted(kinds)])

    @property
    def brings_names(self) -> bool:
        """Whether the change adds, renames or copies to a name (else nothing to check)."""
        return bool(self._new)

    def feed(self, path: str) -> None:
        """One name of the tree the change started from (a file's path)."""
        if path in self._gone or path in self._new:
            return
        for name in _names_of(path):
            twin = self._keys.get(fold(name))
            if twin is not None:
                self._see(name, twin)

    def _see(self, name: str, new: str) -> None:
        if name != new:
            self.found.setdefault(new, name)

    def violation(self) -> Violation | None:
        if not self.found:
            return None
        said = "; ".join(
            f"{shown_name(new)} is {shown_name(old)} on a case-insensitive or normalizing"
            " file system (macOS, Windows)"
            for new, old in sorted(self.found.items())[:20]
        )
        return Violation(PATH_COLLISION_RULE, said, tuple(sorted(self.found)))


IMPORT_SUFFIXES = (".py", ".pyc", ".pyw", ".so", ".pyd")
"""What Python imports a top-level module from (``x.cpython-311-x86_64-linux-gnu.so`` too)."""


RUNNER_MODULES: dict[str, frozenset[str]] = {
    "pytest": frozenset(
        {
            "_pytest",
            "pluggy",
            "iniconfig",
            "py",
            "packaging",
            "exceptiongroup",
            "tomli",
            "pygments",
        }
    ),
}
"""Installed modules a pinned runner imports after the checkout is first on ``sys.path``
(a top-level ``pluggy.py`` doing ``os._exit(0)`` made ``python -m pytest`` exit 0 over a
broken ``add``: red-team helper-113)."""

RUNNER_CONFIG: dict[str, frozenset[str]] = {
    "pytest": frozenset(
        {
            "pytest.toml",
            ".pytest.toml",
            "pytest.ini",
            ".pytest.ini",
            "pyproject.toml",
            "tox.ini",
            "setup.cfg",
            "conftest.py",
        }
    ),
    # GNU make reads the first of GNUmakefile, makefile, Makefile it finds, in every
    # folder a recipe's $(MAKE) -C enters: a change adding a GNUmakefile replaced every
    # rule of the Makefile the pin was made against, and one rewriting the Makefile's
    # test rule to print a summary passed a broken add (red-team helper-130)
    "make": frozenset({"gnumakefile", "makefile"}),
}
"""Files, at any depth, a pinned runner reads as its own configuration or plugins before
any test: ``addopts = --co`` in a new ``pytest.ini`` (or a ``conftest.py`` setting the
exit status) made the pinned ``python -m pytest`` pass without running a test
(red-team helper-113). Besides these, pytest's: a distribution's metadata
(:func:`_distribution_metadata`) and any ``test*.txt``, which it collects as a doctest
by default (a "notes" page's ``>>> import os; os._exit(0)`` ended it with status 0 over
a broken ``add``: helper-120)."""


def guarded_modules(pinned: frozenset[str]) -> frozenset[str]:
    """The top-level modules no change may bring in front of a pinned ``python -m``
    runner: the pinned ones, what they are known to import (:data:`RUNNER_MODULES`), and,
    with any pinned, the standard library's, which the runner itself imports (a patch's
    ``difflib.py`` made ``unittest`` print OK over a broken ``add``: red-team helper-105).
    Other installed packages a runner imports are not known here."""
    if not pinned:
        return frozenset()
    # (``test``, the standard library's own test suite, no runner imports: a repository's
    # first test/ folder is not refused for it)
    known = frozenset().union(*(RUNNER_MODULES.get(module, frozenset()) for module in pinned))
    return pinned | known | (frozenset(sys.stdlib_module_names) - {"test"})


def runner_configuration(plan: dict[str, Any], pinned: frozenset[str]) -> dict[str, str]:
    """The names a plan touches (any change) that a pinned runner reads as its own
    configuration (:data:`RUNNER_CONFIG`): name -> runner. ``pinned``: the pinned
    ``python -m`` modules and programs (``make``: its makefiles and ``*.mk``; a file a
    makefile includes by another name is not known here)."""
    read = {name: module for module in sorted(pinned) for name in RUNNER_CONFIG.get(module, ())}
    if not read:
        return {}
    found: dict[str, str] = {}
    for path in _planned_effects(planned_changes(plan)):
        name = fold(path.rpartition("/")[2])
        module = read.get(name)
        if module is None and "pytest" in pinned and _distribution_metadata(path):
            module = "pytest"  # (it autoloads every [pytest11] entry point it finds)
        if module is None and "pytest" in pinned and fnmatch.fnmatchcase(name, "test*.txt"):
            module = "pytest"  # (it runs each >>> line of one as a doctest: helper-120)
        if module is None and "make" in pinned and _makefile_like(name):
            module = "make"  # (what a makefile includes, by the usual names)
        if module is not None:
            found[path] = module
    return found


MAKEFILE_PREFIXES = ("makefile", "gnumakefile")
MAKEFILE_SUFFIXES = (".mk", ".mak", ".make")


def _makefile_like(name: str) -> bool:
    """A (casefolded) name a makefile is included by as usual: ``Makefile.local``,
    ``Makefile.inc``, ``rules.mak``, ``common.mk`` (an included file adding ``-n`` to
    ``MAKEFLAGS`` made the pinned make a dry run: red-team helper-132). An include of
    any other name is not known here."""
    return name.startswith(MAKEFILE_PREFIXES) or name.endswith(MAKEFILE_SUFFIXES)


def _distribution_metadata(path: str) -> bool:
    """A name inside a ``*.dist-info`` or ``*.egg-info`` folder: a distribution's metadata,
    which ``importlib.metadata`` finds on ``sys.path`` (the checkout first): one naming a
    ``[pytest11]`` plugin made the pinned pytest load it (red-team helper-115)."""
    return any(fold(part).endswith((".dist-info", ".egg-info")) for part in path.split("/")[:-1])


MODULE_SHADOW_RULE = "module_shadow"
_EXTENSION_SUFFIXES = (".so", ".pyd")


def _import_slot(path: str) -> tuple[str, str, int] | None:
    """(folder, module, rank) of a file Python may import a module from, or None. Within
    one folder Python takes a package (``M/__init__.*``, rank 0; its own ``__init__`` an
    extension first, -1) before an extension (``M.<abi>.so``, 1), source (``M.py``, 2)
    and bytecode (``M.pyc``, 3)."""
    folder, _, name = path.rpartition("/")
    stem, dot, rest = name.partition(".")
    if not dot or not stem:
        return None
    if stem == "__init__":
        if not folder or not name.endswith(IMPORT_SUFFIXES):
            return None
        parent, _, package = folder.rpartition("/")
        # (a package's own __init__ is looked for extension first, as a module is: an
        # __init__.<abi>.so is the package, its __init__.py never read)
        return parent, package, -1 if name.endswith(_EXTENSION_SUFFIXES) else 0
    if name.endswith(_EXTENSION_SUFFIXES):
        return folder, stem, 1
    return {"py": (folder, stem, 2), "pyc": (folder, stem, 3)}.get(rest)


def _is_test_module(path: str) -> bool:
    """A file a test runner collects by its name (``test_*.py``, ``*_test.py``)."""
    name = path.rpartition("/")[2]
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


_RUN_BY_PATH = frozenset({"conftest", "__main__", "setup"})
"""Modules found by their file, never imported by name from ``sys.path`` (pytest loads
each ``conftest.py`` by its path): two of them in two folders hide nothing."""


def _bare_slot(path: str) -> tuple[str, str, int] | None:
    """A new name with no suffix, as a package (rank 0): it may be a link to one."""
    folder, _, name = path.rpartition("/")
    return (folder, name, 0) if name and "." not in name and name.isidentifier() else None


class ModuleShadows:
    """Whether a plan adds a file Python would import in place of a module the base tree
    holds. Two ways:

    * in the same folder, one Python takes first: ``add test_calc/__init__.py`` reads as
      "make the tests a package", and hid ``test_calc.py`` from the pinned ``python -m
      unittest test_calc``, which then ran no test and passed (red-team helper-113); a
      name with no suffix counts as a package (a link to one: helper-115);
    * in another folder that is no package, so may itself be first on ``sys.path``: a
      test runner puts its tests' folder there (``unittest discover -s tests``, pytest's
      default import mode), and a new ``tests/calc.py`` was what the tests imported in
      place of the patched ``calc.py`` (helper-115).

    The approver reads one file and the interpreter runs another, so such a plan is
    never shown, pinned or not. A module the plan deletes (or renames away) hides
    nothing. Fed the base tree's names one at a time, like :class:`PlanAgainstBase`:
    only what is named like the plan's new modules is kept, and the base's packages."""

    def __init__(self, plan: dict[str, Any]) -> None:
        effects = _planned_effects(planned_changes(plan))
        self._gone = {path for path, kinds in effects.items() if "delete" in kinds}
        self._added: dict[tuple[str, str], list[tuple[int, str]]] = {}
        self._planned_packages: set[str] = set()
        for path, kinds in effects.items():
            if "add" not in kinds:
                continue
            slot = _import_slot(path) or _bare_slot(path)
            if slot is not None:
                self._added.setdefault(slot[:2], []).append((slot[2], path))
                if slot[2] <= 0:
                    self._planned_packages.add(f"{slot[0]}/{slot[1]}".lstrip("/"))
        self._names = {module for _, module in self._added}
        self._packages: set[str] = set()  # folders the base makes packages
        self._tests = {path.rpartition("/")[0] for path in effects if _is_test_module(path)}
        self._elsewhere: list[tuple[str, str, str]] = []  # (folder, module, base path)
        self._namespaces: dict[str, tuple[str, str]] = {}  # folder -> (parent, module)
        self.found: dict[str, str] = {}  # the plan's new file -> the base's file it hides

    def feed(self, name: str) -> None:
        if not self._added or name in self._gone:
            return
        if _is_test_module(name):
            self._tests.add(name.rpartition("/")[0])
        parts = name.split("/")
        for depth in range(1, len(parts)):  # a folder named like a new module: a namespace
            if parts[depth - 1] in self._names:  # package unless an __init__ makes it more
                self._namespaces["/".join(parts[:depth])] = (
                    "/".join(parts[: depth - 1]),
                    parts[depth - 1],
                )
        slot = _import_slot(name)
        if slot is None:
            return
        if slot[2] <= 0:
            self._packages.add(f"{slot[0]}/{slot[1]}".lstrip("/"))
        self._against(slot, name)

    def _against(self, slot: tuple[str, str, int], name: str) -> None:
        for rank, path in self._added.get(slot[:2], ()):
            if rank < slot[2]:
                self.found.setdefault(path, name)
        if slot[1] in self._names:
            self._elsewhere.append((slot[0], slot[1], name))

    def _on_a_path(self, folder: str) -> bool:
        """Whether ``folder`` may be a ``sys.path`` entry: it is no package, or it holds
        tests (``unittest discover -s tests`` puts its folder first, package or not:
        helper-117)."""
        packaged = folder in self._packages or folder in self._planned_packages
        return not packaged or folder in self._tests

    def hidden(self) -> dict[str, str]:
        """The plan's new files -> a base file each would be imported in place of."""
        for folder, (parent, module) in self._namespaces.items():
            if folder not in self._packages and folder not in self._planned_packages:
                # (rank 4: Python takes anything else first; an __init__ the plan adds in
                # the folder itself makes it the package, hiding nothing)
                self._against((parent, module, 4), f"{folder}/")
        self._namespaces.clear()
        self._across_folders()
        for added in self._added.values():  # two new files of one module: one is never read
            first = min(added)
            for rank, path in added:
                if rank > first[0]:
                    self.found.setdefault(first[1], path)
        return self.found

    def _across_folders(self) -> None:
        for (folder, module), added in self._added.items():
            if module in _RUN_BY_PATH or not self._on_a_path(folder):
                continue
            for base_folder, base_module, base_path in self._elsewhere:
                if base_module == module and base_folder != folder and self._on_a_path(base_folder):
                    for _, path in added:
                        self.found.setdefault(path, base_path)

    def violation(self) -> Violation | None:
        if not self.hidden():
            return None
        said = "; ".join(
            f"{shown_name(new)} would be imported in place of {shown_name(old)}"
            for new, old in sorted(self.found.items())[:20]
        )
        return Violation(
            MODULE_SHADOW_RULE,
            f"{said}: Python takes a package before a module of its name, an extension"
            " before source, source before bytecode; the approver would read one file and"
            " the interpreter run another",
            tuple(sorted(self.found)),
        )


def runner_shadows(plan: dict[str, Any], modules: frozenset[str]) -> dict[str, str]:
    """The names a plan brings (added, or renamed to) that Python would import, run as
    ``python -m M`` in the checkout, in place of a pinned module ``M``: a top-level
    ``M.py`` (or ``M.<abi>.so``...) or anything in a top-level ``M/`` folder. The
    worktree is first on ``sys.path``, so a patch adding ``unittest.py`` beside a pinned
    ``python3 -m unittest`` ran its own program, which printed the runner's OK while
    ``add`` was broken (red-team helper-104). Name -> module; the caller keeps only the
    modules the base tree does not have already (the repository's own package)."""
    if not modules:
        return {}
    found: dict[str, str] = {}
    for path, kinds in _planned_effects(planned_changes(plan)).items():
        if "add" not in kinds:
            continue
        top, sep, _ = path.partition("/")
        module = top if sep else _module_of(top)
        if module in modules:
            found[path] = module
    return found


def _module_of(name: str) -> str | None:
    """The module a top-level entry may be imported as, or None if Python imports none:
    ``M.py`` (``M.<abi>.so``...), and ``M`` itself, which may be a link to a package's
    folder (red-team helper-105)."""
    stem, dot, _ = name.partition(".")
    if not dot:
        return name
    return stem if name.endswith(IMPORT_SUFFIXES) else None


def imports_as(name: str) -> str | None:
    """The top-level module a base tree's file makes importable, or None: a top-level
    ``M.py`` (``M.<abi>.so``...) or ``M/__init__.py`` (a regular package)."""
    top, sep, rest = name.partition("/")
    if not sep:
        stem, dot, _ = top.partition(".")
        return stem if dot and top.endswith(IMPORT_SUFFIXES) else None
    return (
        top
        if rest in ("__init__.py", "__init__.pyc")
        or (rest.startswith("__init__.") and rest.endswith(IMPORT_SUFFIXES))
        else None
    )


def top_level_module(name: str) -> str:
    """The top-level module a base tree's file path holds (or would shadow)."""
    top, sep, _ = name.partition("/")
    return top if sep else (_module_of(top) or top)


PLAN_BASE_RULE = "plan_base"


class PlanAgainstBase:
    """Whether a plan's entries agree with the base tree it will be applied to: what it
    modifies, deletes or renames from is a file there, what it adds or renames to is
    not, nor a folder of it, nor a name below one of its files.

    A plan that disagrees can never land as it reads: the patch that follows it is
    refused (``outside_plan``: the plan says modify, the patch did add), after a human
    approved it and a provider call was paid. Worse, the approver reads ``modify
    README.MD`` beside a tracked ``README.md`` as a change to that file. So CompileST
    asks the model again, saying which entries disagree, and never shows such a plan.
    Fed the base tree's file names one at a time, like :class:`FoldedTwins`: only the
    plan's own names (a bounded number) are held.
    """

    def __init__(self, plan: dict[str, Any]) -> None:
        entries = planned_changes(plan)
        effects = _planned_effects(entries)
        named: dict[str, int] = {}  # each name an entry gives a fate (a rename: both)
        for entry in entries:
            for name in _named_paths(entry):
                named[name] = named.get(name, 0) + 1
        # git records one change per path: of two fates one never happens, and the
        # approver may read the other (red-team helper-106)
        self._twice = sorted(name for name, count in named.items() if count > 1)
        news = sorted(p for p, kinds in effects.items() if "add" in kinds)
        self._nested = sorted(  # a new name that is also a folder of another new one
            p for p in news if any(other.startswith(p + "/") for other in news)
        )
        self._existing = {p for p, kinds in effects.items() if kinds & {"modify", "delete"}}
        self._gone = {p for p, kinds in effects.items() if "delete" in kinds}
        self._new = {p for p, kinds in effects.items() if "add" in kinds}
        folders: dict[str, str] = {}  # a folder a new name needs -> that name
        for path in sorted(self._new):
            for name in _names_of(path)[:-1]:
                folders.setdefault(name, path)
        self._folders = folders
        self._found: set[str] = set()  # planned names the base holds as files
        self._is_folder: set[str] = set()  # new names the base holds as folders
        self._file_above: dict[str, str] = {}  # new name -> a base file where it needs a folder

    def feed(self, name: str) -> None:
        """One file's path in the base tree."""
        if name in self._existing or name in self._new:
            self._found.add(name)
        new = self._folders.get(name)
        if new is not None and name not in self._gone:  # (a file the plan deletes frees it)
            self._file_above.setdefault(new, name)
        for folder in _names_of(name)[:-1]:
            if folder in self._new:
                self._is_folder.add(folder)

    def disagreements(self) -> list[str]:
        """What the plan says that the base tree does not bear out, each entry once."""
        said: list[str] = [f"{shown_name(p)} is named by more than one entry" for p in self._twice]
        said += [f"{shown_name(p)} is both a new file and a new folder" for p in self._nested]
        for path in sorted(self._existing - self._found):
            said.append(f"{shown_name(path)} is not a file of the base tree")
        for path in sorted(self._new):
            if path in self._found:
                said.append(f"{shown_name(path)} is a file of the base tree already")
            elif path in self._is_folder:
                said.append(f"{shown_name(path)} is a folder of the base tree")
            elif path in self._file_above:
                above = shown_name(self._file_above[path])
                said.append(f"{shown_name(path)} lies below {above}, a file of the base tree")
        return said

    def violation(self) -> Violation | None:
        said = self.disagreements()
        if not said:
            return None
        shown = "; ".join(said[:20]) + (f"; and {len(said) - 20} more" if len(said) > 20 else "")
        return Violation(
            PLAN_BASE_RULE,
            f"the plan's files disagree with the base tree: {shown} (modify, delete and a"
            " rename's from name files the base tree has; add and a rename's path name"
            " new ones)",
        )


def _names_of(path: str) -> list[str]:
    """``a/b/c.py`` -> ``a``, ``a/b``, ``a/b/c.py``: the path and each folder it is in."""
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def shown_name(name: str) -> str:
    """A name as a message quotes it, in ASCII: ``caf\\xe9.py`` and ``cafe\\u0301.py``
    told apart, as the screen would not."""
    return ascii(name)[1:-1]


def _planned_effects(plan: list[PlannedChange]) -> dict[str, set[str]]:
    allowed: dict[str, set[str]] = {}
    for entry in plan:
        if entry.change == "rename":
            if entry.source is not None:
                allowed.setdefault(entry.source, set()).add("delete")
            allowed.setdefault(entry.path, set()).add("add")
        else:
            allowed.setdefault(entry.path, set()).add(entry.change)
    return allowed


def _half_renames(changes: list[IndexChange], plan: list[PlannedChange]) -> list[Violation]:
    """A planned rename the patch makes only half of: the approver signed a move, and
    deleting the source alone deleted the tests (red-team helper-108); adding the target
    alone copies. A planned file left alone is fine; half a move is another change."""
    done = {(path, effect) for change in changes for path, effect in _effects(change)}
    found: list[Violation] = []
    for entry in plan:
        if entry.change != "rename" or entry.source is None:
            continue
        deleted = (entry.source, "delete") in done
        added = (entry.path, "add") in done
        if deleted != added:
            did = (
                f"deleted {shown_name(entry.source)} without adding {shown_name(entry.path)}"
                if deleted
                else f"added {shown_name(entry.path)} and kept {shown_name(entry.source)}"
            )
            found.append(
                Violation(
                    "outside_plan",
                    f"the plan renames {shown_name(entry.source)} to {shown_name(entry.path)};"
                    f" the patch {did}",
                    (entry.source, entry.path),
                )
            )
    return found


def _outside_plan(changes: list[IndexChange], plan: list[PlannedChange]) -> list[Violation]:
    allowed = _planned_effects(plan)
    unlisted: list[str] = []
    found: list[Violation] = []
    for change in changes:
        for path, effect in _effects(change):
            kinds = allowed.get(path)
            if kinds is None:
                unlisted.append(path)
            elif effect not in kinds:
                said = "/".join(sorted(kinds))
                found.append(
                    Violation(
                        "outside_plan",
                        f"{path}: the plan says {said}, the patch did {effect}",
                        (path,),
                    )
                )
    found += _half_renames(changes, plan)
    if unlisted:
        paths = tuple(dict.fromkeys(unlisted))
        found.insert(
            0,
            Violation(
                "outside_plan",
                "the patch changes paths the approved plan does not list: " + ", ".join(paths),
                paths,
            ),
        )
    return found


def link_stays_inside(path: str, target: str) -> bool:
    """Does a symlink at ``path`` pointing to ``target`` resolve inside the worktree?

    Lexical: the adapter also asks the filesystem (``link_inside``), which sees through
    any other symlink on the way.
    """
    if not target or target.startswith("/") or "\0" in target:
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if joined == ".":
        return True
    return unconfined(joined) is None


def _path_rules(change: IndexChange, policy: Policy) -> list[Violation]:
    found: list[Violation] = []
    for path in [change.path] + ([change.source] if change.source is not None else []):
        why = unconfined(path)
        if why is not None:
            found.append(Violation("confinement", f"{path}: {why}", (path,)))
        elif (pattern := forbidden(path, policy.refused_paths())) is not None:
            found.append(Violation("forbidden_path", f"{path} matches {pattern}", (path,)))
    return found


def _encoding_rules(change: IndexChange) -> list[Violation]:
    if change.coding is None or change.status == "D":
        return []
    path = change.path
    importable = fold(path).endswith(IMPORTED_SUFFIXES)
    declared = unreadable_coding(change.coding, importable=importable)
    if declared is None:
        return []
    return [
        Violation(
            SOURCE_ENCODING_RULE,
            f"{path} declares {declared} in its first two lines: Python may read it"
            " otherwise than the diff shows it (UTF-8), and a comment the approver reads"
            " be code to the interpreter; declare UTF-8, latin-1 or ASCII",
            (path,),
        )
    ]


def _mode_rules(change: IndexChange, policy: Policy) -> list[Violation]:
    path = change.path
    if change.status not in _KNOWN_STATUS:
        return [Violation("unknown_change", f"{path}: git reports status {change.status}", (path,))]
    if GITLINK in (change.old_mode, change.new_mode):
        return [Violation("submodule", f"{path} is a submodule (mode {GITLINK})", (path,))]
    if change.new_mode != SYMLINK:
        return []
    target = change.link_target
    if not policy.allow_symlinks:
        return [
            Violation(
                "symlink",
                f"{path} is a symlink to {target!r}; the policy does not allow symlinks",
                (path,),
            )
        ]
    if target is None or not link_stays_inside(path, target) or change.link_inside is False:
        return [
            Violation(
                "symlink", f"{path} is a symlink to {target!r}, outside the worktree", (path,)
            )
        ]
    return []


GIT_CONFINEMENT_REFUSALS = ("invalid path", "beyond a symbolic link", "outside repository")
"""What ``git apply`` says when a patch names a path outside the worktree or in .git."""


def confinement_refusal(reason: str) -> Violation | None:
    """A ``confinement`` violation if git refused the patch for where it writes.

    ``git apply`` checks paths before it writes anything; a refusal for where a patch
    writes is not a typo to retry but the same rule as a path that climbs out.
    """
    if any(marker in reason for marker in GIT_CONFINEMENT_REFUSALS):
        return Violation("confinement", f"git apply refused the patch: {reason[:500]}")
    return None


GIT_NESTED_REPOSITORY = "does not have a commit checked out"
"""What ``git add`` says of a nested repository with no commit (it cannot be a gitlink)."""


def staging_refusal(reason: str) -> Violation | None:
    """The rule a refusal of ``git add`` stands for, if it is one: a path out of the
    worktree (``confinement``), or a nested repository with no commit (``submodule``:
    staged, it would be a gitlink, which the policy refuses as well)."""
    found = confinement_refusal(reason)
    if found is None and GIT_NESTED_REPOSITORY in reason:
        found = Violation(
            "submodule", f"the change holds a nested repository git cannot stage: {reason[:500]}"
        )
    return found


def new_executables(changes: list[IndexChange]) -> tuple[str, ...]:
    """Paths that are executable now and were not before (added, or chmod +x)."""
    return tuple(c.path for c in changes if c.new_mode == EXECUTABLE and c.old_mode != EXECUTABLE)


def check_changes(changes: list[IndexChange], plan: dict[str, Any], policy: Policy) -> ChangeReport:
    """Judge what git says a patch changed against the approved plan and the policy."""
    planned = planned_changes(plan)
    found = _outside_plan(changes, planned)
    for change in changes:
        found += _path_rules(change, policy)
        found += _mode_rules(change, policy)
        found += _encoding_rules(change)
    executables = new_executables(changes)
    if executables and not policy.allow_new_executables:
        found.append(
            Violation(
                "executable",
                "the policy refuses new executables: " + ", ".join(executables),
                executables,
            )
        )
    if len(changes) > policy.max_files:
        found.append(
            Violation(
                "max_files", f"the patch touches {len(changes)} files (max {policy.max_files})"
            )
        )
    lines = sum((c.added or 0) + (c.removed or 0) for c in changes)
    if lines > policy.max_lines:
        found.append(
            Violation("max_lines", f"the patch changes {lines} lines (max {policy.max_lines})")
        )
    touched = {path for c in changes for path, _ in _effects(c)}
    untouched = tuple(p for entry in planned for p in _named_paths(entry) if p not in touched)
    return ChangeReport(found, executables, tuple(dict.fromkeys(untouched)), lines)
