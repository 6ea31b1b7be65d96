"""Red-team helper-133: ``daemon.json`` is world-readable until its ``chmod``.

``kodo oc up`` records the daemon's basic-auth password in ``<state>/daemon.json``
(``.kodo/oc`` by default: made 0755 with the umask, as is ``.kodo``). ``_write_state``
writes ``daemon.tmp`` with ``Path.write_text`` (created 0644 under umask 022), and only
then ``chmod``s it to 0600 and renames it into place. Any local user that opens the file
in that window (an inotify watch on the folder says when it appears) keeps a descriptor
that reads the password after the ``chmod``: the password of the daemon that holds every
run's worktree and answers ``GET /config/providers`` with the provider's API key in it.

The spec stops at the moment of the ``chmod`` (deterministic: no race to win) and has
another uid read the file then.

The safe outcome: the file is 0600 from the moment it exists (``os.open(..., O_CREAT |
O_EXCL, 0o600)``, as ``services/cli/upstate.py`` does for ``up.json``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.oc_daemon import daemon

pytestmark = pytest.mark.security

OTHER_UID = 65533
PASSWORD = "rt133-daemon-basic-auth-s3cret"  # noqa: S105 - a made-up one, to look for

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="becomes another uid with setpriv")


def read_as_other_user(path: str) -> str:
    prefix = ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"]
    done = subprocess.run(
        [*prefix, "cat", path], capture_output=True, text=True, timeout=20, check=False, cwd="/"
    )
    return done.stdout


@pytest.fixture
def root() -> Iterator[Path]:
    """A checkout others may pass through (under /home/USER or /srv; pytest's tmp_path
    sits in a 0700 folder, which would hide what kodo's own modes allow)."""
    path = Path(tempfile.mkdtemp(prefix="kodo-rt133-oc-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@needs_root
def test_daemon_password_is_never_readable_by_another_local_user(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = root / ".kodo" / "oc"
    (state_dir / "home").mkdir(parents=True)  # as `kodo oc up` makes it (prepare)

    seen: list[str] = []
    real_chmod = os.chmod

    def chmod_spy(path: object, mode: int, *args: object, **kwargs: object) -> None:
        if str(path).startswith(str(state_dir)):
            seen.append(read_as_other_user(str(path)))
        real_chmod(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "chmod", chmod_spy)
    state = daemon.DaemonState(
        pid=1,
        url="http://127.0.0.1:4096",
        username=daemon.USERNAME,
        password=PASSWORD,
        home=str(state_dir / "home"),
        log_path=str(state_dir / "opencode.log"),
        llm_url="",
    )
    daemon._write_state(state_dir, state)

    assert PASSWORD in (state_dir / daemon.STATE_FILE).read_text()
    leaked = [text for text in seen if PASSWORD in text]
    assert not leaked, f"uid {OTHER_UID} read the daemon's password before the chmod"
    assert PASSWORD not in read_as_other_user(str(state_dir / daemon.STATE_FILE))
