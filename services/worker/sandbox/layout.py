"""What the sandbox shows a command, as bubblewrap's command line (pure: no IO).

:func:`bwrap_argv` turns a :class:`Layout` (the worktree, the allowlisted programs, the
host's system directories, the private ``/etc``) and the :class:`Limits` into the argv
that runs the command; tested without bubblewrap.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

INNER_UID = 65534
"""The uid (and gid) the command has inside the sandbox."""
PRLIMIT = "/usr/bin/prlimit"
SETPRIV = "/usr/bin/setpriv"
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/protocols",
    "/etc/services",
    "/etc/mime.types",
)
"""Host files programs need to start; everything else of /etc stays out."""
NETWORK_ETC = ("/etc/resolv.conf", "/etc/ssl", "/etc/ca-certificates", "/etc/gai.conf")
"""Added only when the operator allows the network."""
PRIVATE_ETC: Mapping[str, bytes] = {
    "passwd": (
        f"root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:x:{INNER_UID}:{INNER_UID}:"
        "kodo sandbox:/tmp:/usr/sbin/nologin\n"
    ).encode(),
    "group": f"root:x:0:\nsandbox:x:{INNER_UID}:\n".encode(),
    "hosts": b"127.0.0.1 localhost\n::1 localhost\n",
}
"""The sandbox's own /etc files: its two users, and a localhost that is the sandbox's."""
ALWAYS_PROTECTED = ("/", "/root", "/home", "/etc", "/var", "/run", "/tmp", "/proc", "/sys")  # noqa: S108
"""No bind source may be one of these or contain one (nor contain a run-specific one)."""
TMP = "/tmp"  # noqa: S108 (inside the sandbox: its own private tmpfs, never the host's)
PYCACHE_PREFIX = "/nonexistent/kodo-pycache"
"""Where Python looks for bytecode instead of each ``__pycache__`` (and never finds any),
set when the checkout carries a ``__pycache__``: ``PYTHONDONTWRITEBYTECODE`` stops writing
bytecode, not reading it, and a checkout's ``__pycache__/calc.cpython-311.pyc`` compiled
``unchecked-hash`` from the old source ran in place of the patched ``calc.py`` under the
pinned runner (red-team helper-113). Only then: the prefix hides the standard library's
bytecode as well, and every command recompiled what it imported of it (0.10 s of CPU
became 0.15 s for ``import unittest, json, difflib``)."""
PASSED_ENV = ("LANG", "LC_ALL")
"""Host variables a command inherits; everything else is set here, never copied."""
LOWER = "/.kodo/lower"
"""Overlay mode: where the host worktree is bound read-only until the overlay is up.
Copy mode: where it is bound read-only for the copy (and stays, read-only)."""
DISK = "/.kodo/disk"
"""Overlay mode: the bounded tmpfs holding every byte the command writes to the worktree."""
BYTES_PER_INODE = 4096
"""The overlay's tmpfs holds one file or folder per this many bytes of its size (at least
1024), so empty files and folder chains are bounded too, not only their contents."""
SH = "/bin/sh"
OVERLAY_SCRIPT = f"""set -eu
lower=$1 disk=$2 wt=$3 size=$4 inodes=$5 tmpsize=$6 tmpinodes=$7 mode=$8
shift 8
command -p mount -o "remount,nosuid,nodev,size=$tmpsize,nr_inodes=$tmpinodes" {TMP}
command -p mount -t tmpfs -o "nosuid,nodev,mode=0700,size=$size,nr_inodes=$inodes" \\
  kodo-disk "$disk"
command -p install -d -o {INNER_UID} -g {INNER_UID} -m "$mode" "$disk/upper" "$disk/work"
layers="lowerdir=$lower,upperdir=$disk/upper,workdir=$disk/work"
command -p mount -t overlay kodo-worktree -o "nosuid,nodev,$layers" "$wt"
if [ -f "$wt/.git" ] && [ ! -L "$wt/.git" ]; then
  command -p mount --bind "$wt/.git" "$wt/.git"
  command -p mount -o remount,bind,ro,nosuid,nodev "$wt/.git"
fi
command -p umount "$lower"
command -p umount -l "$disk"
cd "$wt"
exec "$@"
"""
"""Runs as the sandbox's root, before privileges are dropped: the worktree the command
sees is an overlay whose writes land in the bounded tmpfs, never on the host's disk;
/tmp is remounted first bounded in files too (an empty file takes no byte, only an
inode, which without a cgroup nothing counts): in place, so the toolchain folders and a
worktree bound beneath it stay (a fresh tmpfs mounted over them hid a virtualenv under
/tmp, and no verification could start).
The overlay's root is the worktree's as the command sees it: the worktree is lent to the
command's uid (:data:`INNER_UID` inside) for its lifetime, and its mode is the script's
eighth argument (one ``install`` makes both layer folders so: the work folder is never
the command's to reach, it is gone with ``$disk``).
Both mounts it was built from are unmounted so the command sees only the overlay; its
``.git`` pointer stays read-only there, as in the bind mode. Every program it runs as
that root is looked up on the system's default PATH (``command -p``), never on the
command's, which lists the allowlisted programs' folders first."""

PERL = "/usr/bin/perl"
MOUNT_SYSCALLS: dict[str, tuple[int, int]] = {
    "x86_64": (165, 166),
    "aarch64": (40, 39),
    "arm64": (40, 39),
    "riscv64": (40, 39),
    "loongarch64": (40, 39),
    "s390x": (21, 52),
    "ppc64le": (21, 52),
    "ppc64": (21, 52),
    "i386": (21, 52),
    "i686": (21, 52),
    "armv7l": (21, 52),
}
"""mount(2) and umount2(2)'s numbers per machine, for :data:`OVERLAY_PERL`."""
MOUNTER_FAILED = 125
"""Overlay mode: the exit status when the worktree could not be made (nothing ran)."""
CLOSE_RANGE = 436
"""close_range(2)'s number on every machine of :data:`MOUNT_SYSCALLS` (Linux 5.9 gave
new system calls one number everywhere)."""
OVERLAY_PERL = f"""
my ($mount, $umount2, $lower, $disk, $wt, $size, $inodes, $tmpsize, $tmpinodes, $mode)
  = splice(@ARGV, 0, 10);
my ($RDONLY, $NOSUID, $NODEV, $REMOUNT, $BIND, $DETACH) = (1, 2, 4, 32, 4096, 2);
sub fail {{ print STDERR "kodo-sandbox: $_[0]: $!\\n"; exit {MOUNTER_FAILED}; }}
sub mnt {{
  my ($source, $target, $type, $flags, $data) = @_;
  syscall($mount, $source, $target, $type, $flags, $data) == 0 or fail("mount $target");
}}
mnt("none", "{TMP}", 0, $REMOUNT | $NOSUID | $NODEV, "size=$tmpsize,nr_inodes=$tmpinodes");
mnt("kodo-disk", $disk, "tmpfs", $NOSUID | $NODEV, "mode=0700,size=$size,nr_inodes=$inodes");
for my $layer ("$disk/upper", "$disk/work") {{
  mkdir($layer) or fail("mkdir $layer");
  chown({INNER_UID}, {INNER_UID}, $layer) or fail("chown $layer");
  chmod(oct($mode), $layer) or fail("chmod $layer");
}}
mnt("kodo-worktree", $wt, "overlay", $NOSUID | $NODEV,
    "lowerdir=$lower,upperdir=$disk/upper,workdir=$disk/work");
if (-f "$wt/.git" && ! -l "$wt/.git") {{
  mnt("$wt/.git", "$wt/.git", 0, $BIND, 0);
  mnt("none", "$wt/.git", 0, $REMOUNT | $BIND | $RDONLY | $NOSUID | $NODEV, 0);
}}
syscall($umount2, $lower, 0) == 0 or fail("umount $lower");
syscall($umount2, $disk, $DETACH) == 0 or fail("umount $disk");
chdir($wt) or fail("cd $wt");
delete $ENV{{PERL_BADLANG}};
syscall({CLOSE_RANGE}, 3, 4294967295, 0) == 0 or $!{{ENOSYS}} or fail("close descriptors");
exec {{ $ARGV[0] }} @ARGV;
fail("cannot start $ARGV[0]");
"""
""":data:`OVERLAY_SCRIPT`'s mounts, flag for flag, as one Perl process making the system
calls itself (mount(2)'s and umount2(2)'s numbers its first two arguments) instead of a
shell starting ``mount`` four times, ``install`` and ``umount`` twice: the script cost
some 20 ms of every verification's start (measured), most of it those seven programs
starting and each ``mount`` reading the sandbox's mount table. Used where the system has
Perl and the machine's numbers are known (:func:`overlay_mounter`); strings are passed
as pointers, a literal ``0`` as a null pointer (no file system type on a remount or a
bind), and ``exec {{ $ARGV[0] }}`` starts the program itself, never through a shell. It
starts with the command's environment plus ``PERL_BADLANG=0`` (a ``LANG`` the system has
no locale for would have Perl warn into the command's output), which it drops again.
Every descriptor above 2 is closed before (``close_range``): bubblewrap leaves its
``--userns-block-fd`` open in the sandbox, and the command inherited that pipe of the
worker's (inert, its one byte read and its writer closed, but not the command's to
hold). A kernel older than 5.9 has no ``close_range``; the shell script cannot close a
descriptor above 9 (``dash``): both leave it so."""


def overlay_mounter(machine: str, perl_usable: bool) -> tuple[int, int] | None:
    """mount(2)'s and umount2(2)'s numbers for :data:`OVERLAY_PERL`, or None: the shell
    script then (no Perl, or a machine whose numbers kodo does not know)."""
    return MOUNT_SYSCALLS.get(machine) if perl_usable else None


COPY_FAILED = 125
"""Copy mode: the exit status when the checkout could not be copied (the command never ran)."""
INNER_BWRAP = "/.kodo/bwrap"
"""Copy mode: where bubblewrap itself is bound (read-only), to drop the command into a
nested user namespace once its worktree is made."""
COPY_SCRIPT = f"""set -eu
lower=$1 wt=$2 size=$3 inodes=$4 tmpsize=$5 tmpinodes=$6
shift 6
command -p mount -t tmpfs -o "nosuid,nodev,mode=1777,size=$tmpsize,nr_inodes=$tmpinodes" \\
  kodo-tmp {TMP}
command -p mkdir -p "$wt"
command -p mount -t tmpfs -o "nosuid,nodev,mode=0755,size=$size,nr_inodes=$inodes" \\
  kodo-worktree "$wt"
if ! command -p cp -a --no-preserve=ownership -- "$lower/." "$wt/"; then
  echo "kodo-sandbox: the checkout could not be copied into the command's worktree" >&2
  exit {COPY_FAILED}
fi
echo copied >&0
exec 0</dev/null
exec {INNER_BWRAP} --unshare-user --uid {INNER_UID} --gid {INNER_UID} --disable-userns \\
  --die-with-parent --dev-bind / / --chdir "$wt" -- "$@"
"""
"""Copy mode (the worker is not root, so it cannot mount an overlay): the command's
worktree is a tmpfs bounded in bytes and in files (``nr_inodes``: an empty file takes no
byte, only an inode, host kernel memory that a non-root worker has no cgroup to count)
holding a copy of the checkout; /tmp is remounted so too, first (a worktree under /tmp
is made again on it). What the command writes lands
in them and is gone with the sandbox, never on the host's disk.

bubblewrap's ``--tmpfs`` sets no inode bound and ``mount`` refuses a uid other than 0,
so this script runs as the sandbox's root (the worker's own uid on the host, with
CAP_SYS_ADMIN and CAP_SETFCAP in the sandbox's namespace only), mounts both, copies,
and runs the command through a second bubblewrap in a nested user namespace: uid
:data:`INNER_UID` (the sandbox's root outside it, so the copy is the command's), no
capabilities, no user namespace of its own, everything mounted as it is (read-only
where it is: the nested namespace cannot remount what it inherits). The copy's success
is said on the runner's pipe, the script's standard input (fd 0: ``/bin/sh`` may be
dash, which cannot name a descriptor past 9, and a worker's pipe is numbered past 9),
replaced with ``/dev/null`` before the command starts: the command cannot fake the word
or its absence (its own exit status is its own)."""


@dataclass(frozen=True)
class Limits:
    cpu_s: int
    memory_bytes: int
    nproc: int
    fsize_bytes: int
    cpus: float = 0.0  # the CPUs' time the whole sandbox may use (its cgroup); 0: no quota

    def _bounds(self) -> list[tuple[str, int, int]]:
        """Each bound once: prlimit's option name, the resource, the limit."""
        return [
            ("cpu", resource.RLIMIT_CPU, self.cpu_s),
            ("as", resource.RLIMIT_AS, self.memory_bytes),
            ("nproc", resource.RLIMIT_NPROC, self.nproc),
            ("fsize", resource.RLIMIT_FSIZE, self.fsize_bytes),
            ("core", resource.RLIMIT_CORE, 0),
        ]

    def rlimits(self) -> list[tuple[int, int]]:
        """The bounds as (resource, limit), soft and hard alike: what the root-mode
        worker sets with ``prlimit(2)`` on the sandbox's first process while bubblewrap
        waits for its user namespace map, so everything in the sandbox inherits them
        (one program fewer per command than :meth:`prlimit_argv`). Set as host root on a
        process of a user namespace it owns; no process in the sandbox can raise a hard
        limit (that takes CAP_SYS_RESOURCE in the host's namespace)."""
        return [(which, value) for _, which, value in self._bounds()]

    def prlimit_argv(self) -> list[str]:
        """``prlimit`` applies them to the command (and its children) only, not the worker."""
        options = [f"--{name}={value}:{value}" for name, _, value in self._bounds()]
        return [PRLIMIT, *options, "--"]


@dataclass(frozen=True)
class Toolchain:
    """Where the allowlisted programs live: the PATH inside and what must be bound."""

    programs: dict[str, str] = field(default_factory=dict)  # name -> absolute path
    binds: tuple[str, ...] = ()  # read-only prefixes outside /usr
    path: tuple[str, ...] = ()
    skipped: dict[str, list[str]] = field(default_factory=dict)  # name -> why not usable


@dataclass(frozen=True)
class HostSystem:
    """What the host's root looks like: /bin etc. as symlinks or dirs; which /etc exists."""

    links: tuple[tuple[str, str], ...]  # (path, target) of merged-/usr symlinks
    dirs: tuple[str, ...]  # top-level system dirs that are real directories
    etc: tuple[str, ...]  # host /etc entries present (ETC_FILES, NETWORK_ETC)


@dataclass(frozen=True)
class Layout:
    """Everything the sandbox shows the command."""

    worktree: Path
    toolchain: Toolchain
    host: HostSystem
    private_etc: Mapping[str, int]
    """/etc's passwd, group and hosts of the sandbox's own (:data:`PRIVATE_ETC`): the
    descriptor bubblewrap reads each from (``--ro-bind-data``), so no file of them lies
    on the host, for another process to change or the disk to create and delete."""
    network: bool
    tmp_bytes: int
    root_mode: bool  # the worker is root: map the sandbox uid itself and drop with setpriv
    overlay_bytes: int | None = None
    """Bound on what the command may write to the worktree, which it then sees as an
    overlay on a tmpfs of this size (root mode only: mounting needs the sandbox's root);
    None binds the host worktree writable, bounded per file only."""
    worktree_mode: int = 0o755
    """Overlay mode: the worktree's permission bits, which the overlay's root gets."""
    copy_bytes: int | None = None
    """Without root: the size of the tmpfs the command sees as its worktree, holding a
    copy of the checkout (so: the checkout's pages plus what the command may write);
    None binds the host worktree writable, bounded per file only."""
    copy_inodes: int = 0
    """Without root: the files and folders that tmpfs holds (the checkout's entries plus
    one per BYTES_PER_INODE of what the command may write, at least 1024)."""
    mounter: tuple[int, int] | None = None
    """Overlay mode: mount(2)'s and umount2(2)'s numbers, to mount with
    :data:`OVERLAY_PERL`; None mounts with :data:`OVERLAY_SCRIPT`."""


VERDICT_ENV = {
    # what tests print reaches the output when printed, not when the interpreter exits:
    # block-buffered, it followed unittest's summary (written to stderr) and pushed it
    # out of the tail kodo reads it from (red-team helper-132)
    "PYTHONUNBUFFERED": "1",
    # make remakes every target it is asked for: in a fresh checkout nothing is built,
    # and a file or folder the change named like a target (a test/ beside a test rule
    # that is not .PHONY, a unit/ beside its prerequisite) had made it "up to date", its
    # recipe, the tests, never run (red-team helper-132)
    "MAKEFLAGS": "B",
}
"""What every verification command gets so that its output says what it ran."""


def sandbox_env(
    toolchain: Toolchain, passed: dict[str, str], *, hide_bytecode: bool = True
) -> dict[str, str]:
    """The command's whole environment; ``hide_bytecode`` (the checkout carries a
    ``__pycache__``) points Python's bytecode lookups at :data:`PYCACHE_PREFIX`."""
    path = [*toolchain.path, "/usr/local/bin", "/usr/bin", "/bin"]
    env = {k: passed[k] for k in PASSED_ENV if k in passed}
    env.update(
        {
            "PATH": ":".join(dict.fromkeys(path)),
            "HOME": TMP,
            "TMPDIR": TMP,
            "PYTHONDONTWRITEBYTECODE": "1",
            **VERDICT_ENV,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_TERMINAL_PROMPT": "0",
        }
    )
    if hide_bytecode:
        env["PYTHONPYCACHEPREFIX"] = PYCACHE_PREFIX
    return env


def under_tmp(binds: Sequence[str]) -> list[str]:
    """The toolchain folders that lie under /tmp. Copy mode mounts a fresh, file-bounded
    tmpfs over the sandbox's /tmp (bubblewrap's cannot be remounted there), which would
    hide them: the sandbox refuses such a toolchain rather than run without the bound."""
    return [b for b in binds if b == TMP or b.startswith(f"{TMP}/")]


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parents
    return [str(p) for p in reversed(list(parts)) if str(p) != "/"]


def _made_dirs(destinations: Sequence[str]) -> list[str]:
    """Directories to create (0755) so the command may walk to every bind."""
    made: list[str] = []
    for dest in destinations:
        for parent in _ancestors(dest):
            if parent in (TMP, "/usr") or parent.startswith(("/usr/", "/proc/", "/dev/")):
                continue
            if parent not in made:
                made.append(parent)
    return made


def bwrap_argv(
    bwrap: str,
    layout: Layout,
    env: dict[str, str],
    command: Sequence[str],
    limits: Limits,
    *,
    block_fd: int | None = None,
    info_fd: int | None = None,
) -> list[str]:
    """The full bubblewrap command line for ``command`` (pure). In copy mode bubblewrap's
    standard input must be the pipe the copy says it is done on (COPY_SCRIPT)."""
    wt = str(layout.worktree)
    argv = [bwrap, "--unshare-all", "--unshare-user"]
    if not layout.root_mode and layout.copy_bytes is None:
        # root mode forbids them itself (forbid_nested_userns), copy mode's nested bwrap
        argv.append("--disable-userns")
    if layout.network:
        argv.append("--share-net")
    argv += ["--die-with-parent", "--new-session", "--hostname", "kodo-sandbox"]
    copy = layout.copy_bytes if not layout.root_mode else None
    if layout.root_mode:
        if block_fd is None or info_fd is None:
            raise ValueError("root mode maps the user namespace itself: needs block/info fds")
        argv += ["--userns-block-fd", str(block_fd), "--info-fd", str(info_fd)]
    elif copy is not None:  # the copy script is the namespace's root; the command is not
        argv += ["--uid", "0", "--gid", "0"]
    else:
        argv += ["--uid", str(INNER_UID), "--gid", str(INNER_UID)]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path, target in layout.host.links:
        argv += ["--symlink", target, path]
    for path in layout.host.dirs:
        argv += ["--ro-bind", path, path]
    argv += ["--perms", "0755", "--dir", "/etc"]
    wanted_etc = ETC_FILES + (NETWORK_ETC if layout.network else ())
    for path in layout.host.etc:
        if path in wanted_etc:
            argv += ["--ro-bind", path, path]
    for name, fd in layout.private_etc.items():
        argv += ["--perms", "0644", "--ro-bind-data", str(fd), f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(layout.tmp_bytes), "--tmpfs", TMP]
    for made in _made_dirs([*layout.toolchain.binds, wt]):
        argv += ["--perms", "0755", "--dir", made]
    for prefix in layout.toolchain.binds:
        argv += ["--ro-bind", prefix, prefix]
    overlay = layout.overlay_bytes if layout.root_mode else None
    if overlay is not None:
        argv += ["--ro-bind", wt, LOWER, "--perms", "0700", "--dir", DISK]
        argv += ["--perms", "0755", "--dir", wt]
    elif copy is not None:  # COPY_SCRIPT mounts the bounded tmpfs on it
        argv += ["--ro-bind", wt, LOWER, "--ro-bind", bwrap, INNER_BWRAP]
        argv += ["--perms", "0755", "--dir", wt]
    else:
        argv += ["--bind", wt, wt]
        # The .git file points kodo's later git at the source repository's gitdir: read-only.
        argv += ["--ro-bind-try", f"{wt}/.git", f"{wt}/.git"]
    if not layout.root_mode:
        # bubblewrap runs as the command's own uid here, so the tmpfs it builds the root
        # from (and /dev's) would be the command's to fill, past every size bound
        argv += ["--remount-ro", "/", "--remount-ro", "/dev"]
    argv += ["--chdir", wt, "--clearenv"]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    if layout.root_mode and layout.overlay_bytes is not None and layout.mounter is not None:
        argv += ["--setenv", "PERL_BADLANG", "0"]  # OVERLAY_PERL drops it again
    if layout.root_mode:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if overlay is not None:
            argv += ["--cap-add", "CAP_SYS_ADMIN", "--"]
            if layout.mounter is None:
                argv += [SH, "-c", OVERLAY_SCRIPT, "kodo-worktree"]
            else:
                argv += [PERL, "-e", OVERLAY_PERL, "--", *map(str, layout.mounter)]
            inodes = max(1024, overlay // BYTES_PER_INODE)
            argv += [LOWER, DISK, wt, str(overlay), str(inodes)]
            argv += [str(layout.tmp_bytes), str(max(1024, layout.tmp_bytes // BYTES_PER_INODE))]
            argv.append(format(layout.worktree_mode & 0o7777, "04o"))
        else:
            argv.append("--")
        argv += [
            SETPRIV,
            f"--reuid={INNER_UID}",
            f"--regid={INNER_UID}",
            "--clear-groups",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
        ]
    elif copy is not None:
        argv += ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETFCAP", "--"]
        argv += [SH, "-c", COPY_SCRIPT, "kodo-worktree", LOWER, wt, str(copy)]
        tmp_inodes = max(1024, layout.tmp_bytes // BYTES_PER_INODE)
        argv += [str(max(1024, layout.copy_inodes)), str(layout.tmp_bytes), str(tmp_inodes)]
    else:
        argv.append("--")
    # root mode: the worker sets the limits on the sandbox's first process (Limits.rlimits)
    bounded = [] if layout.root_mode else limits.prlimit_argv()
    return argv + bounded + list(command)


def id_map(host_id: int) -> str:
    """The root-mode user namespace map: inner 0 is host root (bubblewrap's own setup),
    the command's uid is ``host_id``."""
    return f"0 0 1\n{INNER_UID} {host_id} 1\n"


def unsafe_bind(source: str, protected: Sequence[str]) -> str | None:
    """The protected path ``source`` would expose (it is it, or contains it), if any.

    As ``Path(source) == Path(raw) or Path(raw).is_relative_to(source)`` reads them
    (parts compared, nothing resolved), with each path's parts parsed once per process
    (:func:`_path_parts`): a command's toolchain asked this about twenty times an
    execution, and parsing the same few paths again was most of what finding it cost."""
    src = _path_parts(source)
    n = len(src)
    for raw in (*ALWAYS_PROTECTED, *protected):
        guarded = _path_parts(raw)
        # ``is_relative_to`` of no parts (``Path("")``) holds for a relative path only
        if (guarded[:n] == src) if n else not PurePosixPath(raw).is_absolute():
            return raw
    return None


@lru_cache(maxsize=1024)
def _path_parts(path: str) -> tuple[str, ...]:
    """``PurePosixPath(path).parts`` (a pure function of the string: cached)."""
    return PurePosixPath(path).parts
