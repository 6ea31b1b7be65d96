"""Find-or-start Postgres: reuse one that accepts a login, else a private throwaway cluster.

Postgres refuses to run as root, so as root the cluster is created and run as
the ``postgres`` (or ``nobody``) user, its data directory owned by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

from devstack import pgurl, state, supervisor
from devstack.binaries import postgres_bin_dir
from devstack.handle import DevstackError, ServiceHandle, StackPaths

_SOCKET_PATH_MAX = 100  # sun_path is 104-108 bytes; leave room for "/.s.PGSQL.NNNNN"


def ensure_postgres(
    url: str, *, home: Path | None = None, timeout_s: float = 60.0, install_missing: bool = True
) -> ServiceHandle:
    """Reuse the server at ``url`` if a login works; else start (or keep) a private one."""
    paths = StackPaths.default(home)
    with state.locked(paths):
        # Ours first: a server we started on the requested port also answers there.
        kept = state.find_kept(paths, "postgres", url, lambda u: pgurl.answers(u))
        if kept is not None:
            return kept
        reason = pgurl.login_error(url)
        if reason is None:
            return ServiceHandle(name="postgres", kind="reused", url=url, requested_url=url)
        host = pgurl.parse(url).host or ""
        if host not in supervisor.LOCAL_HOSTS:
            raise DevstackError(
                f"no Postgres answers at {host} ({reason}); it is not local, so none is started"
            )
        handle = _start(url, paths, timeout_s, install_missing)
        state.record(paths, handle)
        return handle


def start_again(handle: ServiceHandle, paths: StackPaths, *, timeout_s: float) -> ServiceHandle:
    """Start a stopped server of ours again: the same port, the same data directory."""
    port = pgurl.parse(handle.url).port
    fresh = _start(handle.url, paths, timeout_s, install_missing=False, port=port)
    return replace(fresh, requested_url=handle.requested_url)


def _start(
    url: str, paths: StackPaths, timeout_s: float, install_missing: bool, port: int | None = None
) -> ServiceHandle:
    bin_dir = postgres_bin_dir(install_missing=install_missing)
    parsed = pgurl.parse(url)
    port = port or supervisor.choose_port(parsed.host or "", parsed.port or 5432)
    user = _server_user()
    data_dir = paths.data_root / f"postgres-{port}"
    log_file = paths.data_root / f"postgres-{port}.log"
    paths.data_root.mkdir(parents=True, exist_ok=True)
    _init_cluster(bin_dir, data_dir, parsed.username or "postgres", user)
    sock_dir = str(data_dir) if len(str(data_dir)) < _SOCKET_PATH_MAX - 20 else ""
    binary = bin_dir / "postgres"
    argv = [str(binary), "-D", str(data_dir), "-h", supervisor.LOOPBACK, "-p", str(port)]
    argv += ["-k", sock_dir, "-c", "fsync=off", "-c", "full_page_writes=off"]
    child = supervisor.spawn("postgres", argv, log_file, user=user)
    new_url = pgurl.with_host_port(url, supervisor.LOOPBACK, port)
    supervisor.wait_until(
        lambda: pgurl.answers(new_url, timeout_s=1.0), child, timeout_s, "postgres"
    )
    return ServiceHandle(
        name="postgres",
        kind="started",
        url=new_url,
        requested_url=url,
        pid=child.pid,
        start_ticks=child.ticks,
        binary=str(binary),
        data_dir=str(data_dir),
        log_file=str(log_file),
    )


def _server_user() -> str | None:
    """None when we are not root; else an unprivileged account to run Postgres as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise DevstackError("running as root and no 'postgres' or 'nobody' user to run Postgres as")


def _init_cluster(bin_dir: Path, data_dir: Path, superuser: str, user: str | None) -> None:
    """initdb with trust auth, unless a cluster of the same major version is already there."""
    if _cluster_version(data_dir) == _binary_version(bin_dir):
        return
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
        _check_reachable(data_dir, entry)
    argv = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", superuser, "-A", "trust"]
    argv += ["-E", "UTF8", "--no-locale", "--no-sync"]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        user=user,
        group=pwd.getpwnam(user).pw_gid if user else None,
        extra_groups=[] if user else None,
    )
    if done.returncode != 0:
        raise DevstackError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _cluster_version(data_dir: Path) -> str | None:
    try:
        return (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        return None


def _binary_version(bin_dir: Path) -> str:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    # "postgres (PostgreSQL) 15.20 (Debian ...)" -> "15"
    number = next((word for word in out.split() if word[:1].isdigit()), "")
    return number.split(".")[0]


def _check_reachable(path: Path, entry: pwd.struct_passwd) -> None:
    """Postgres runs as ``entry``: every parent directory must let it through."""
    for parent in path.parents:
        info = parent.stat()
        if info.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid == entry.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            raise DevstackError(
                f"user {entry.pw_name!r} cannot enter {parent}; Postgres data must live in a "
                f"directory it can reach (chmod o+x {parent}, or choose another stack home)"
            )
