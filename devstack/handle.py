"""What ``ensure_*`` hands back, and where the stack keeps its files."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from shared.redact import redact_text

Kind = Literal["reused", "started", "kept"]
KINDS: tuple[Kind, ...] = ("reused", "started", "kept")


class DevstackError(RuntimeError):
    """A service could neither be reused nor started; the message says what to do."""


def repo_root() -> Path:
    """The checkout holding alembic.ini (editable install), else the working directory."""
    here = Path(__file__).resolve().parents[1]  # devstack/handle.py -> the checkout
    return here if (here / "alembic.ini").is_file() else Path.cwd()


@dataclass(frozen=True)
class StackPaths:
    """Where state, lock, data and logs live: ``<home>/stack.json`` and ``<home>/stack/``."""

    home: Path

    @classmethod
    def default(cls, home: Path | None = None) -> StackPaths:
        return cls((home or repo_root() / ".kodo").resolve())

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def lock_file(self) -> Path:
        return self.home / "stack.lock"

    @property
    def data_root(self) -> Path:
        return self.home / "stack"


@dataclass(frozen=True)
class ServiceHandle:
    """One service in use: ``reused`` (someone else's), ``started`` now, or ``kept`` running.

    ``kept`` means an earlier ``up`` started it and it still answers; like
    ``started`` it is ours, so ``down`` stops it. A reused one is never touched.
    """

    name: str
    kind: Kind
    url: str
    requested_url: str
    pid: int | None = None
    start_ticks: int | None = None  # /proc start time: a reused pid is never signalled
    binary: str | None = None
    data_dir: str | None = None
    log_file: str | None = None

    @property
    def owned(self) -> bool:
        return self.kind != "reused"

    def describe(self) -> str:
        """One line for humans: ``redis: started redis://... (pid 7, /usr/bin/redis-server)``."""
        line = f"{self.name}: {self.kind} {redact_text(self.url)}"  # (never its password)
        if self.owned:
            line += f" (pid {self.pid}, {self.binary})"
        return line

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: object) -> ServiceHandle:
        """Parse a state-file entry, refusing anything malformed (fail closed)."""
        if not isinstance(raw, dict):
            raise DevstackError(f"bad state entry: {raw!r}")
        name, kind, url, req = (raw.get(k) for k in ("name", "kind", "url", "requested_url"))
        pid, ticks = raw.get("pid"), raw.get("start_ticks")
        if not (isinstance(name, str) and isinstance(url, str) and isinstance(req, str)):
            raise DevstackError(f"bad state entry: {raw!r}")
        kind_ok = next((k for k in KINDS if k == kind), None)
        ints_ok = all(v is None or isinstance(v, int) for v in (pid, ticks))
        if kind_ok is None or not ints_ok:
            raise DevstackError(f"bad state entry: {raw!r}")
        return cls(
            name=name,
            kind=kind_ok,
            url=url,
            requested_url=req,
            pid=pid,
            start_ticks=ticks,
            binary=_opt_str(raw.get("binary")),
            data_dir=_opt_str(raw.get("data_dir")),
            log_file=_opt_str(raw.get("log_file")),
        )


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
