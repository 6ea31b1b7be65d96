"""Run a program from a gevent-patched process without forking it: ``posix_spawn``.

gevent's ``subprocess`` starts every child with a full ``fork()`` of the calling
process and runs Python in the child until ``exec``: in an API worker of 100+ MB that
cost about 4 ms of the worker's CPU (the event loop stalls meanwhile) and 6 ms of the
child's per program, against 0.4 ms and 0.8 ms with ``posix_spawn`` (glibc's is a
``vfork``: no page tables copied, no Python in the child). The submit path runs three
git programs per request, so the API pays this a thousand times in a burst.

:func:`run` has ``subprocess.run``'s contract for what kodo uses of it (argv, env,
optional stdin bytes, captured stdout and stderr, a timeout that kills the child), and
waits cooperatively: the child's exit is a libev child watcher started before anything
can yield (so its status cannot be reaped unseen), its pipes are read with gevent's
non-blocking reads. The working directory is the caller's business (``git -C``):
Python's ``posix_spawn`` cannot change it.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence


def cooperative() -> bool:
    """Whether gevent patched this process's ``subprocess`` (an API or oc-compat worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("subprocess"))


def _program(name: str, env: Mapping[str, str]) -> str:
    """``name`` looked up on ``env``'s PATH (as subprocess does; posix_spawnp would use
    this process's own PATH)."""
    if os.sep in name:
        return name
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {name!r}", name)
    return found


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: bytes | None,
    timeout_s: float,
) -> subprocess.CompletedProcess[bytes]:
    """``argv`` (looked up on ``env``'s PATH) to its end; its exit code, stdout and stderr.

    Raises ``subprocess.TimeoutExpired`` after ``timeout_s`` (the child is killed and
    reaped first) and ``OSError`` when the program cannot be started, as
    ``subprocess.run`` does. The exit code is negative for a signal, as there.
    """
    import gevent
    from gevent.event import Event
    from gevent.monkey import get_original
    from gevent.os import make_nonblocking, nb_read, nb_write

    # gevent's os.close defers a pipe's close to the loop's next turn (for fds with
    # watchers); the child's ends must close now, or the loop may sleep on a read that
    # waits for that very close (the child waiting for stdin's end, we for its output).
    # No watcher is active on any of these fds when they are closed here.
    close = get_original("os", "close")
    hub = gevent.get_hub()
    hub.loop.install_sigchld()  # what gevent.subprocess does before it forks
    ours: list[int] = []  # the parent's pipe ends, closed whatever happens
    theirs: list[int] = []  # the child's ends, closed once it has them

    def pipe() -> tuple[int, int]:
        read, write = os.pipe()  # both close-on-exec: only the dup2'd copies are inherited
        return read, write

    try:
        out_r, out_w = pipe()
        err_r, err_w = pipe()
        ours += [out_r, err_r]
        theirs += [out_w, err_w]
        actions: list[tuple[object, ...]] = [
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
        ]
        in_w: int | None = None
        if stdin is None:
            actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
        else:
            in_r, in_w = pipe()
            ours.append(in_w)
            theirs.append(in_r)
            actions.append((os.POSIX_SPAWN_DUP2, in_r, 0))
        exited = Event()
        pid = os.posix_spawn(
            _program(argv[0], env),
            list(argv),
            dict(env),
            file_actions=actions,
            # Python ignores SIGPIPE (and SIGXFSZ); subprocess restores them in the child.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            setpgroup=0,  # a group of its own: see shared.apart
        )
        # Before anything yields: the loop reaps children, and a status it reaps for a
        # pid nobody watches is lost.
        watcher = hub.loop.child(pid, True)
        watcher.start(exited.set)
        try:
            for fd in theirs:
                close(fd)
            theirs.clear()
            for fd in ours:
                make_nonblocking(fd)

            def drain(fd: int) -> bytes:
                chunks: list[bytes] = []
                while chunk := nb_read(fd, 65536):
                    chunks.append(chunk)
                return b"".join(chunks)

            def feed(fd: int, data: bytes) -> None:
                view = memoryview(data)
                try:
                    while view:
                        view = view[nb_write(fd, view) :]
                except BrokenPipeError:
                    pass  # the child stopped reading: its exit code says why
                finally:
                    close(fd)
                    ours.remove(fd)

            with gevent.Timeout(timeout_s, False):
                feeder = None if in_w is None else gevent.spawn(feed, in_w, stdin or b"")
                errors = gevent.spawn(drain, err_r)
                stdout = drain(out_r)
                stderr = errors.get()
                if feeder is not None:
                    feeder.get()
                exited.wait()
                status = watcher.rstatus
                return subprocess.CompletedProcess(
                    list(argv), os.waitstatus_to_exitcode(status), stdout, stderr
                )
            for greenlet in (feeder, errors):  # the timeout fired: nothing left running
                if greenlet is not None:
                    greenlet.kill()
            raise subprocess.TimeoutExpired(list(argv), timeout_s)
        finally:
            if not exited.is_set():  # timed out, or failed reading: the child goes too
                os.kill(pid, signal.SIGKILL)
                exited.wait()  # reaped by the loop: no zombie is left behind
            watcher.stop()
            watcher.close()
    finally:
        for fd in ours + theirs:
            close(fd)
