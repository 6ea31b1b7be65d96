"""Run-time policy gates on plans, per repository, and the policy itself. Pure: no IO.

A repository's policy (``.kodo/policy.toml``) names forbidden paths, the most files,
changed lines and bytes a patch may have and the most bytes of each file, whether
symlinks and new executables may be added, and which programs may verify it. It is
read at submit time from a trusted ref (the repository's default branch or an
operator-set ref) and at ``base_ref``, and the strictest combination of the two is the
run's policy: a submitter cannot pick an older, weaker file, and a patch can never
loosen the policy it is judged by. A violation fails the run closed, with a
diagnostic. What a patch *did* is judged by
:mod:`shared.domain.change_check`.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_FORBIDDEN = (
    ".github/workflows/*",
    ".env",
    ".env.*",
    "*/.env",
    "*/.env.*",
    ".kodo/*",
    ".git/*",
)

KODO_OWN_PATHS = (".kodo", ".kodo/*")
"""Forbidden whatever a policy says: the policy file lives here, and ``forbidden_paths``
replaces the defaults, so without this a policy naming only ``secrets/*`` let a patch
rewrite ``.kodo/policy.toml`` on its branch."""


MAX_PATCH_BYTES = 4 << 20
"""The default bound on a patch as git shows it (its stat and diff): a line counts once
against ``max_lines`` whatever its length, so lines alone let one 200 MB line through
to the worker's memory, the ledger's artifacts and the approver's page."""


MAX_FILE_BYTES = 16 << 20
"""The default bound on each file a patch adds or changes: a compressible file passes
``max_patch_bytes`` whatever its size (4 GiB of zeros is a 1.7 MB patch), and git, the
branch and every verification checkout would carry it."""


VERIFY_PINNED_RULE = "verify_pinned"
_PYTHON = re.compile(r"python(?:\d+(?:\.\d+)*)?")
"""A Python interpreter's program name (``python``, ``python3``, ``python3.11``)."""


_RUNNER_SCRIPTS = {
    "pytest": "pytest",
    "py.test": "pytest",
    "pytest-3": "pytest",
    "py.test-3": "pytest",
}
"""Console scripts that are a runner module by another name (``pytest -q``; Debian's
``pytest-3``)."""


def _past_env(argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` without a leading ``env`` and its options and assignments (``env pytest``
    runs pytest; helper-117)."""
    rest = argv
    while rest and rest[0].rsplit("/", 1)[-1] == "env":
        rest = rest[1:]
        while rest and (rest[0].startswith("-") or "=" in rest[0]):
            rest = rest[1:]
    return rest


MAKE = "make"
MAKE_PROGRAMS = frozenset({"make", "gmake"})
"""The names GNU make is run by."""


def _module_run(args: list[str]) -> str | None:
    """The module Python's options ``args`` run with ``-m`` (``-m x``, ``-mx``, ``-Bm x``),
    or None (a script, ``-c`` code, stdin). Options taking a value (``-W``, ``-X``)
    skip it; erring towards a module only refuses more."""
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("-") or arg == "-":
            return None  # a script or stdin
        if arg[1:2] in ("W", "X"):
            if len(arg) == 2:
                next(rest, None)
            continue
        flags = arg[1:]
        if "m" in flags and not arg.startswith("--"):
            named = flags[flags.index("m") + 1 :]
            return named or next(rest, None)
        if "c" in flags:
            return None  # code follows
    return None


def runner_module(argv: tuple[str, ...] | list[str]) -> str | None:
    """The top-level module a command runs as its test runner: ``unittest`` for
    ``python3 -m unittest -q``, ``pytest`` for ``pytest -q`` or ``env X=1 python -m
    pytest``; None for any other program (a script, ``-c`` code, ``make``)."""
    rest = _past_env(tuple(argv))
    program = rest[0].rsplit("/", 1)[-1] if rest else ""
    if _PYTHON.fullmatch(program) is not None:
        module = _module_run(list(rest[1:]))
        return module.split(".", 1)[0] if module else None
    return _RUNNER_SCRIPTS.get(program)


class PolicyError(ValueError):
    """The policy file itself is malformed: refuse to run rather than guess."""


@dataclass(frozen=True)
class Policy:
    forbidden_paths: tuple[str, ...] = DEFAULT_FORBIDDEN
    max_files: int = 50
    max_lines: int = 2000
    max_patch_bytes: int = MAX_PATCH_BYTES
    max_file_bytes: int = MAX_FILE_BYTES
    exec_allowlist: tuple[str, ...] | None = None
    allow_symlinks: bool = False
    allow_new_executables: bool = True
    # False: DecideST may answer "done" (nothing to verify) and the run succeeds unverified.
    require_verification: bool = True
    # The only argv that may verify a change (None: any the allowlist admits). The agent
    # chooses the verification after approval: unpinned, ``python3 -c pass`` made a run
    # "succeed" whatever the change broke.
    verify_commands: tuple[tuple[str, ...], ...] | None = None
    source: str = "default"

    def to_json(self) -> dict[str, Any]:
        found = asdict(self)
        if self.verify_commands is None:  # a snapshot without pinning reads as before
            del found["verify_commands"]
        else:
            found["verify_commands"] = [list(argv) for argv in self.verify_commands]
        return found

    def refused_paths(self) -> tuple[str, ...]:
        """The patterns a path a plan or patch names may not match: kodo's own folder,
        then the policy's forbidden paths."""
        return KODO_OWN_PATHS + tuple(p for p in self.forbidden_paths if p not in KODO_OWN_PATHS)

    def pinned_modules(self) -> frozenset[str]:
        """The top-level modules pinned commands run with ``python -m`` (``unittest`` of
        ``python3 -m unittest -q``): a name a change brings in front of one replaces the
        pinned runner (:func:`shared.domain.change_check.runner_shadows`)."""
        # (a runner's console script reads the same configuration: helper-115)
        modules = (runner_module(command) for command in self.verify_commands or ())
        return frozenset(module for module in modules if module is not None)

    def pinned_programs(self) -> frozenset[str]:
        """The programs other than ``python -m`` runners whose own configuration a change
        must leave alone: ``make`` when a pinned command runs it (its makefiles are its
        recipes: red-team helper-130)."""
        programs = (_past_env(tuple(command)) for command in self.verify_commands or ())
        named = (rest[0].rsplit("/", 1)[-1] for rest in programs if rest)
        return frozenset(MAKE for program in named if program in MAKE_PROGRAMS)

    def verification_refusal(self, argv: list[str]) -> Violation | None:
        """``verify_pinned`` if the policy pins its verification commands and ``argv`` is
        none of them (compared whole, argument for argument)."""
        if self.verify_commands is None or tuple(argv) in self.verify_commands:
            return None
        pinned = "; ".join(" ".join(c) for c in self.verify_commands) or "none: nothing may"
        return Violation(
            VERIFY_PINNED_RULE,
            f"the repository's policy pins its verification commands ({pinned}); "
            f"{' '.join(argv)!r} is not one of them",
        )

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Policy:
        """Rebuild the snapshot a step stored (CompileST fixes the run's policy)."""
        allow = raw.get("exec_allowlist")
        return cls(
            forbidden_paths=tuple(raw["forbidden_paths"]),
            max_files=int(raw["max_files"]),
            max_lines=int(raw["max_lines"]),
            # a snapshot stored before the key existed holds the default bound
            max_patch_bytes=int(raw.get("max_patch_bytes", MAX_PATCH_BYTES)),
            max_file_bytes=int(raw.get("max_file_bytes", MAX_FILE_BYTES)),
            exec_allowlist=tuple(allow) if allow is not None else None,
            allow_symlinks=raw.get("allow_symlinks") is True,
            allow_new_executables=raw.get("allow_new_executables", True) is True,
            require_verification=raw.get("require_verification", True) is not False,
            verify_commands=_commands(raw.get("verify_commands"), "verify_commands")
            if raw.get("verify_commands") is not None
            else None,
            source=str(raw.get("source", "stored")),
        )


@dataclass(frozen=True)
class Violation:
    """One broken rule: its name, a sentence for a human, and the paths involved."""

    rule: str
    detail: str
    paths: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "detail": self.detail, "paths": list(self.paths)}


@dataclass(frozen=True)
class DiffStats:
    added: int
    removed: int

    @property
    def lines(self) -> int:
        return self.added + self.removed


def _strings(raw: object, key: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise PolicyError(f"{key} must be a list of non-empty strings")
    return tuple(raw)


MAX_VERIFY_COMMANDS = 20


def _commands(raw: object, key: str) -> tuple[tuple[str, ...], ...]:
    """A list of argv lists (each a program and its arguments, no shell)."""
    if not isinstance(raw, list) or len(raw) > MAX_VERIFY_COMMANDS:
        raise PolicyError(f"{key} must be a list of at most {MAX_VERIFY_COMMANDS} argv lists")
    commands = []
    for argv in raw:
        if not isinstance(argv, list) or not argv:
            raise PolicyError(f"{key}: each command is a non-empty list of strings")
        commands.append(_strings(argv, key))
    return tuple(commands)


def _flag(raw: object, key: str) -> bool:
    if not isinstance(raw, bool):
        raise PolicyError(f"{key} must be true or false")
    return raw


def _positive(raw: object, key: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise PolicyError(f"{key} must be a positive integer")
    return raw


def policy_from_mapping(raw: dict[str, Any], source: str) -> Policy:
    """Build a Policy from a parsed ``[policy]`` table; unknown keys are errors."""
    known = {
        "forbidden_paths",
        "extra_forbidden_paths",
        "max_files",
        "max_lines",
        "max_patch_bytes",
        "max_file_bytes",
        "exec_allowlist",
        "allow_symlinks",
        "allow_new_executables",
        "require_verification",
        "verify_commands",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyError(f"unknown policy keys: {', '.join(unknown)}")
    forbidden = (
        _strings(raw["forbidden_paths"], "forbidden_paths")
        if "forbidden_paths" in raw
        else DEFAULT_FORBIDDEN
    )
    if "extra_forbidden_paths" in raw:
        forbidden = forbidden + _strings(raw["extra_forbidden_paths"], "extra_forbidden_paths")
    return Policy(
        forbidden_paths=forbidden,
        max_files=_positive(raw.get("max_files", 50), "max_files"),
        max_lines=_positive(raw.get("max_lines", 2000), "max_lines"),
        max_patch_bytes=_positive(raw.get("max_patch_bytes", MAX_PATCH_BYTES), "max_patch_bytes"),
        max_file_bytes=_positive(raw.get("max_file_bytes", MAX_FILE_BYTES), "max_file_bytes"),
        exec_allowlist=_strings(raw["exec_allowlist"], "exec_allowlist")
        if "exec_allowlist" in raw
        else None,
        allow_symlinks=_flag(raw.get("allow_symlinks", False), "allow_symlinks"),
        allow_new_executables=_flag(
            raw.get("allow_new_executables", True), "allow_new_executables"
        ),
        require_verification=_flag(raw.get("require_verification", True), "require_verification"),
        verify_commands=_commands(raw["verify_commands"], "verify_commands")
        if "verify_commands" in raw
        else None,
        source=source,
    )


def strictest(a: Policy, b: Policy) -> Policy:
    """The combination of two policies that is at least as strict as each.

    Forbidden paths are united, limits take the minimum, allowlists and pinned
    verification commands intersect (no list means no narrowing), and a permission holds
    only if both grant it.
    """
    allow: tuple[str, ...] | None
    if a.exec_allowlist is None or b.exec_allowlist is None:
        allow = a.exec_allowlist if b.exec_allowlist is None else b.exec_allowlist
    else:
        allow = tuple(p for p in a.exec_allowlist if p in b.exec_allowlist)
    pinned: tuple[tuple[str, ...], ...] | None
    if a.verify_commands is None or b.verify_commands is None:
        pinned = a.verify_commands if b.verify_commands is None else b.verify_commands
    else:
        pinned = tuple(c for c in a.verify_commands if c in b.verify_commands)
    return Policy(
        forbidden_paths=tuple(dict.fromkeys(a.forbidden_paths + b.forbidden_paths)),
        max_files=min(a.max_files, b.max_files),
        max_lines=min(a.max_lines, b.max_lines),
        max_patch_bytes=min(a.max_patch_bytes, b.max_patch_bytes),
        max_file_bytes=min(a.max_file_bytes, b.max_file_bytes),
        exec_allowlist=allow,
        allow_symlinks=a.allow_symlinks and b.allow_symlinks,
        allow_new_executables=a.allow_new_executables and b.allow_new_executables,
        require_verification=a.require_verification or b.require_verification,
        verify_commands=pinned,
        source=a.source if a.source == b.source else f"{a.source} + {b.source}",
    )


def forbidden(path: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that forbids ``path`` (``*`` crosses directories), if any.

    Matched without case and in one Unicode normal form: on a case-folding filesystem
    (macOS, Windows) ``.ENV`` is the ``.env`` a dotenv loader opens, and macOS stores
    names decomposed, so a pattern must not be dodged by spelling. Forbidding more on a
    case-sensitive filesystem is the safe side.
    """
    folded = fold(path)
    for pattern in patterns:
        if fnmatch.fnmatchcase(folded, fold(pattern)):
            return pattern
    return None


def fold(name: str) -> str:
    """``name`` as a case-folding, normalizing file system compares it (NFC, casefolded)."""
    return unicodedata.normalize("NFC", name).casefold()


_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Unicode categories that print as nothing or move the cursor: never in a path."""


def unconfined(path: str) -> str | None:
    """Why ``path`` could leave the worktree or reach git's own state, if it could.

    Absolute paths, ``..``, ``.git`` in any component (any case: some filesystems fold
    it), backslashes, empty or ``.`` components, and control or invisible characters
    (a carriage return or a bidi override makes a name read as another) are all refused.
    """
    if not path:
        return "the path is empty"
    if any(unicodedata.category(ch) in _HIDDEN_CATEGORIES for ch in path):
        return "the path holds a control or invisible character"
    if path.startswith("/"):
        return "the path is absolute"
    if "\\" in path:
        return "the path holds a backslash"
    parts = path.split("/")
    if ".." in parts:
        return "the path climbs out with .."
    if any(part.casefold() == ".git" for part in parts):
        return "the path reaches into .git"
    if any(part in ("", ".") for part in parts):
        return "the path has an empty or . component"
    return None


_HUNK = re.compile(r"@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def diff_stats(diff: str) -> DiffStats:
    """Changed-line counts of a unified diff, for display only.

    Only lines inside a hunk count, as many as its ``@@ -a,b +c,d @@`` header says:
    a removed ``-- comment`` reads ``--- comment`` and is still a changed line, not a
    header. Lines end at ``\\n`` alone (``str.splitlines`` would also split inside a
    line, at form feeds and Unicode separators).

    Never a policy input: what a patch changes is what git says it changed after
    applying it (:mod:`shared.domain.change_check`), not what its text claims.
    """
    added = removed = 0
    old_left = new_left = 0
    for line in diff.split("\n"):
        if old_left > 0 or new_left > 0:
            if line.startswith("+"):
                added, new_left = added + 1, new_left - 1
            elif line.startswith("-"):
                removed, old_left = removed + 1, old_left - 1
            elif not line.startswith("\\"):  # "\ No newline at end of file"
                old_left, new_left = old_left - 1, new_left - 1
            continue
        hunk = _HUNK.match(line)
        if hunk is not None:
            old_left, new_left = (int(n) if n is not None else 1 for n in hunk.groups())
    return DiffStats(added, removed)


def effective_allowlist(policy: Policy, operator: tuple[str, ...]) -> tuple[str, ...]:
    """A repository may narrow the operator's allowlist, never widen it."""
    if policy.exec_allowlist is None:
        return operator
    return tuple(p for p in policy.exec_allowlist if p in operator)
