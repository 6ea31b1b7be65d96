"""What the bubblewrap command line shows a command, read without running anything."""

from __future__ import annotations

import dataclasses
import os
import random
import resource
import subprocess
from pathlib import Path

import pytest

from services.worker.sandbox import (
    HostSystem,
    Layout,
    Limits,
    Toolchain,
    bwrap_argv,
    id_map,
    sandbox_env,
    unsafe_bind,
)
from services.worker.sandbox.layout import (
    ALWAYS_PROTECTED,
    COPY_SCRIPT,
    DISK,
    INNER_BWRAP,
    LOWER,
    OVERLAY_PERL,
    OVERLAY_SCRIPT,
    PERL,
    PRIVATE_ETC,
    PYCACHE_PREFIX,
    SH,
    overlay_mounter,
    under_tmp,
)
from services.worker.sandbox.runner import SandboxUnavailable, tmpfs_footprint

LIMITS = Limits(cpu_s=60, memory_bytes=1 << 30, nproc=64, fsize_bytes=1 << 20)
TOOLS = Toolchain(
    {"python3": "/opt/venv/bin/python3"},
    ("/opt/venv", "/root/.pyenv/versions/3.11.7"),
    ("/opt/venv/bin",),
)


def layout(
    *,
    network: bool = False,
    root_mode: bool = False,
    overlay_bytes: int | None = None,
    copy_bytes: int | None = None,
) -> Layout:
    return Layout(
        worktree=Path("/data/ws/run-1"),
        toolchain=TOOLS,
        host=HostSystem((("/bin", "usr/bin"),), ("/lib64",), ("/etc/ld.so.cache", "/etc/ssl")),
        private_etc={"passwd": 7, "group": 8, "hosts": 9},
        network=network,
        tmp_bytes=1 << 20,
        root_mode=root_mode,
        overlay_bytes=overlay_bytes,
        copy_bytes=copy_bytes,
        worktree_mode=0o750,
    )


def binds(argv: list[str]) -> list[tuple[str, str, str]]:
    kinds = ("--bind", "--ro-bind", "--ro-bind-try")
    return [(argv[i], argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a in kinds]


def test_every_namespace_is_new_and_the_sandbox_dies_with_the_worker() -> None:
    argv = bwrap_argv("bwrap", layout(), {}, ["python3"], LIMITS)
    for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert "--share-net" not in argv
    assert "--share-net" in bwrap_argv("bwrap", layout(network=True), {}, ["x"], LIMITS)


def test_only_the_worktree_is_writable_and_its_git_file_is_read_only() -> None:
    argv = bwrap_argv("bwrap", layout(), {}, ["python3"], LIMITS)
    writable = [b for b in binds(argv) if b[0] == "--bind"]
    assert writable == [("--bind", "/data/ws/run-1", "/data/ws/run-1")]
    assert ("--ro-bind-try", "/data/ws/run-1/.git", "/data/ws/run-1/.git") in binds(argv)
    assert binds(argv).index(writable[0]) < binds(argv).index(
        ("--ro-bind-try", "/data/ws/run-1/.git", "/data/ws/run-1/.git")
    )


def test_nothing_of_the_host_is_mounted_but_the_system_and_the_toolchain() -> None:
    argv = bwrap_argv("bwrap", layout(), {}, ["python3"], LIMITS)
    sources = {b[1] for b in binds(argv)}
    assert sources == {
        "/usr",
        "/lib64",
        "/etc/ld.so.cache",
        "/opt/venv",
        "/root/.pyenv/versions/3.11.7",
        "/data/ws/run-1",
        "/data/ws/run-1/.git",
    }
    assert "/etc/ssl" not in sources, "certificates only come with the network"
    assert argv[argv.index("--proc") : argv.index("--proc") + 2] == ["--proc", "/proc"]


def test_passwd_group_and_hosts_are_the_sandboxs_own_read_from_descriptors() -> None:
    argv = bwrap_argv("bwrap", layout(), {}, ["python3"], LIMITS)
    data = [argv[i - 2 : i + 3] for i, a in enumerate(argv) if a == "--ro-bind-data"]
    assert data == [
        ["--perms", "0644", "--ro-bind-data", "7", "/etc/passwd"],
        ["--perms", "0644", "--ro-bind-data", "8", "/etc/group"],
        ["--perms", "0644", "--ro-bind-data", "9", "/etc/hosts"],
    ]
    assert argv.index("--ro-bind-data") > argv.index("/etc"), "inside the sandbox's own /etc"
    assert PRIVATE_ETC["passwd"].endswith(
        b"sandbox:x:65534:65534:kodo sandbox:/tmp:/usr/sbin/nologin\n"
    )
    assert PRIVATE_ETC["hosts"] == b"127.0.0.1 localhost\n::1 localhost\n"


def test_the_command_runs_under_prlimit_and_as_root_drops_to_the_sandbox_uid() -> None:
    plain = bwrap_argv("bwrap", layout(), {}, ["python3", "-V"], LIMITS)
    tail = plain[plain.index("--") + 1 :]
    assert tail[0] == "/usr/bin/prlimit"
    assert "--nproc=64:64" in tail
    assert tail[-2:] == ["python3", "-V"]
    rooted = bwrap_argv(
        "bwrap", layout(root_mode=True), {}, ["python3"], LIMITS, block_fd=5, info_fd=6
    )
    tail = rooted[rooted.index("--") + 1 :]
    assert tail[:3] == ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534"]
    assert "--bounding-set=-all" in tail
    assert id_map(65534) == "0 0 1\n65534 65534 1\n"
    with pytest.raises(ValueError, match="fds"):
        bwrap_argv("bwrap", layout(root_mode=True), {}, ["python3"], LIMITS)


def test_the_environment_is_built_not_inherited() -> None:
    env = sandbox_env(TOOLS, {"DATABASE_URL": "postgresql://x", "LANG": "C.UTF-8"})
    assert "DATABASE_URL" not in env
    assert env["LANG"] == "C.UTF-8"
    assert env["HOME"] == "/tmp"  # noqa: S108 (the sandbox's private tmpfs)
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONPYCACHEPREFIX"] == PYCACHE_PREFIX  # (unless told the tree has none)
    assert "PYTHONPYCACHEPREFIX" not in sandbox_env(TOOLS, {}, hide_bytecode=False)


@pytest.mark.parametrize(
    ("source", "exposed"),
    [
        ("/root", "/root"),
        ("/home", "/home"),
        ("/", "/"),
        ("/srv/kodo", "/srv/kodo/.kodo"),
        ("/root/.pyenv/versions/3.11.7", None),
        ("/srv/kodo/.venv", None),
    ],
)
def test_a_bind_that_would_expose_a_protected_path_is_refused(
    source: str, exposed: str | None
) -> None:
    assert unsafe_bind(source, ["/srv/kodo/.kodo"]) == exposed


def _unsafe_bind_by_pathlib(source: str, protected: list[str]) -> str | None:
    """What unsafe_bind answered when it built and compared Path objects each time."""
    src = Path(source)
    for raw in (*ALWAYS_PROTECTED, *protected):
        guarded = Path(raw)
        if src == guarded or guarded.is_relative_to(src):
            return raw
    return None


def test_unsafe_bind_answers_as_pathlib_does() -> None:
    """The parts it caches per path give pathlib's answer for every shape of path:
    trailing and doubled slashes, ``.`` and ``..`` parts (never resolved), relative
    paths, the empty path, a ``//`` root."""
    pieces = ["", "/", "//", "///", ".", "..", "srv", "kodo", ".kodo", "root", "home", "a b"]
    rng = random.Random(20261207)  # noqa: S311 (a fixed sample of paths, no secret)
    paths = ["", ".", "/", "//", "//srv", "srv", "srv/kodo", "/srv/kodo/", "/srv//kodo/.kodo"]
    for _ in range(400):
        paths.append("/".join(rng.choice(pieces) for _ in range(rng.randint(1, 5))))
    for source in paths:
        protected = [rng.choice(paths) for _ in range(3)]
        assert unsafe_bind(source, protected) == _unsafe_bind_by_pathlib(source, protected), (
            source,
            protected,
        )


def test_the_command_may_make_no_user_namespace_of_its_own() -> None:
    argv = bwrap_argv("bwrap", layout(), {}, ["python3"], LIMITS)
    assert "--disable-userns" in argv[: argv.index("--")]
    # root mode cannot combine it with --userns-block-fd: the worker sets the limit itself
    rooted = bwrap_argv(
        "bwrap", layout(root_mode=True), {}, ["python3"], LIMITS, block_fd=5, info_fd=6
    )
    assert "--disable-userns" not in rooted


def rooted_overlay(size: int = 64 << 20, mounter: tuple[int, int] | None = None) -> list[str]:
    return bwrap_argv(
        "bwrap",
        dataclasses.replace(layout(root_mode=True, overlay_bytes=size), mounter=mounter),
        {},
        ["python3"],
        LIMITS,
        block_fd=5,
        info_fd=6,
    )


def test_as_root_the_worktree_is_never_bound_writable() -> None:
    """The command's worktree is an overlay its own sandbox root mounts: the host's
    worktree is only ever a read-only lower layer, so nothing the command writes (up to
    the overlay's size) reaches the host's disk."""
    argv = rooted_overlay()
    assert [b for b in binds(argv) if b[0] == "--bind"] == []
    assert ("--ro-bind", "/data/ws/run-1", LOWER) in binds(argv)
    assert argv[argv.index(DISK) - 3 : argv.index(DISK)] == ["--perms", "0700", "--dir"]


def test_the_overlay_is_mounted_before_privileges_drop_and_sized_by_the_setting() -> None:
    argv = rooted_overlay(size=8 << 20)
    tail = argv[argv.index("--") + 1 :]
    assert tail[:3] == [SH, "-c", OVERLAY_SCRIPT]
    assert tail[3:9] == ["kodo-worktree", LOWER, DISK, "/data/ws/run-1", str(8 << 20), "2048"]
    assert tail[9:11] == [str(1 << 20), "1024"]  # /tmp: KODO_EXEC_TMP_BYTES, in files too
    assert tail[11] == "0750"  # the worktree's mode, which the overlay's root gets
    assert tail[12:15] == ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534"]
    assert "--bounding-set=-all" in tail
    # the worker sets the rlimits on the sandbox's first process (runner.bound_rlimits)
    assert tail[tail.index("--inh-caps=-all") + 1 :] == ["--", "python3"]
    caps = [argv[i + 1] for i, a in enumerate(argv[: argv.index("--")]) if a == "--cap-add"]
    assert caps == ["CAP_SETUID", "CAP_SETGID", "CAP_SYS_ADMIN"]


def test_where_perl_can_mount_it_takes_the_scripts_arguments_after_the_syscall_numbers() -> None:
    """One Perl process makes the overlay (see the integration test comparing the two):
    the same arguments as the shell script, mount(2)'s and umount2(2)'s numbers first."""
    by_shell = rooted_overlay(size=8 << 20)
    by_perl = rooted_overlay(size=8 << 20, mounter=(165, 166))
    tail = by_perl[by_perl.index("--") + 1 :]
    assert tail[:6] == [PERL, "-e", OVERLAY_PERL, "--", "165", "166"]
    assert tail[6:] == by_shell[by_shell.index("kodo-worktree") + 1 :]
    quiet = ["--setenv", "PERL_BADLANG", "0"]  # a LANG without its locale: no warning
    front = by_perl[: by_perl.index("--")]
    at = next(i for i in range(len(front)) if front[i : i + 3] == quiet)
    assert front[:at] + front[at + 3 :] == by_shell[: by_shell.index("--")]
    assert "delete $ENV{PERL_BADLANG};" in OVERLAY_PERL, "and the command never sees it"


def test_the_perl_mounter_is_used_only_where_its_numbers_are_known() -> None:
    assert overlay_mounter("x86_64", perl_usable=True) == (165, 166)
    assert overlay_mounter("aarch64", perl_usable=True) == (40, 39)
    assert overlay_mounter("x86_64", perl_usable=False) is None
    assert overlay_mounter("pdp11", perl_usable=True) is None


def test_the_perl_mounter_makes_the_same_calls_the_script_runs_programs_for() -> None:
    """Flag for flag what OVERLAY_SCRIPT's mount, install and umount do; every failure
    stops it before the command, and the command is started by its own path."""
    for call in (
        'mnt("none", "/tmp", 0, $REMOUNT | $NOSUID | $NODEV, "size=$tmpsize,nr_inodes=$tmpinodes")',
        'mnt("kodo-disk", $disk, "tmpfs", $NOSUID | $NODEV, "mode=0700,size=$size,nr_inodes=$in',
        'mnt("kodo-worktree", $wt, "overlay", $NOSUID | $NODEV,',
        'mnt("none", "$wt/.git", 0, $REMOUNT | $BIND | $RDONLY | $NOSUID | $NODEV, 0)',
        "syscall($umount2, $lower, 0) == 0",
        "syscall($umount2, $disk, $DETACH) == 0",
        "chown(65534, 65534, $layer)",
        "exec { $ARGV[0] } @ARGV;",
    ):
        assert call in OVERLAY_PERL, call
    assert "(1, 2, 4, 32, 4096, 2)" in OVERLAY_PERL  # MS_RDONLY .. MS_BIND, MNT_DETACH


def test_a_small_overlay_still_holds_a_thousand_files() -> None:
    tail = rooted_overlay(size=1 << 20)
    assert tail[tail.index("kodo-worktree") + 5] == "1024"


def test_without_root_the_overlay_setting_is_not_honoured_and_the_bind_stays() -> None:
    """Only the sandbox's own root can mount: a non-root worker binds the worktree (and
    says so in the step's output and `kodo doctor`)."""
    argv = bwrap_argv("bwrap", layout(overlay_bytes=1 << 20), {}, ["python3"], LIMITS)
    assert ("--bind", "/data/ws/run-1", "/data/ws/run-1") in binds(argv)
    assert SH not in argv
    assert "CAP_SYS_ADMIN" not in argv


def test_without_root_the_command_works_on_a_bounded_copy_and_no_host_folder_is_writable() -> None:
    """The worker's sandbox without root: the checkout is bound read-only for the copy;
    the copy script, the namespace's root, mounts the worktree's tmpfs (``copy_bytes``,
    ``copy_inodes``) and /tmp's, copies, and hands the command to a nested bubblewrap;
    the copy runs before the command's limits and the command itself."""
    bounded = dataclasses.replace(layout(copy_bytes=5 << 20), copy_inodes=3000)
    argv = bwrap_argv("/usr/bin/bwrap", bounded, {}, ["python3"], LIMITS)
    assert [b for b in binds(argv) if b[0] == "--bind"] == []
    assert ("--ro-bind", "/data/ws/run-1", LOWER) in binds(argv)
    assert ("--ro-bind", "/usr/bin/bwrap", INNER_BWRAP) in binds(argv)
    assert not any(a == "--tmpfs" and argv[i + 1] == "/data/ws/run-1" for i, a in enumerate(argv))
    script = argv.index(COPY_SCRIPT)
    assert argv[script - 2 : script] == [SH, "-c"]
    tmp_files = str(max(1024, (1 << 20) // 4096))
    sizes = [str(5 << 20), "3000", str(1 << 20), tmp_files]
    assert argv[script + 1 : script + 8] == ["kodo-worktree", LOWER, "/data/ws/run-1", *sizes]
    assert argv[script + 8] == "/usr/bin/prlimit"
    assert argv[-1] == "python3"
    # the script is the namespace's root with what mounting and mapping need, no more
    setup = argv[: argv.index("--")]
    assert setup[setup.index("--uid") + 1] == "0"
    added = [setup[i + 1] for i, a in enumerate(setup) if a == "--cap-add"]
    assert added == ["CAP_SYS_ADMIN", "CAP_SETFCAP"]
    # root mode ignores it: the overlay is the root worker's bound
    rooted = bwrap_argv(
        "bwrap",
        layout(root_mode=True, copy_bytes=5 << 20),
        {},
        ["x"],
        LIMITS,
        block_fd=3,
        info_fd=4,
    )
    assert COPY_SCRIPT not in rooted


def test_the_copy_script_bounds_files_and_runs_the_command_unprivileged_in_a_nested_namespace() -> (
    None
):
    """Found by the non-root security campaign: bubblewrap's --size bounds a tmpfs in
    bytes only, and 100,000 empty files (host kernel memory no cgroup counted) fitted in
    the copy and in /tmp. Both are mounted with nr_inodes now; the command then runs as
    uid 65534 of a nested user namespace, with no capability and no namespace of its own."""
    mounts = [line for line in COPY_SCRIPT.splitlines() if "mount -t tmpfs" in line]
    assert len(mounts) == 2
    assert all("nosuid,nodev," in line and "nr_inodes=" in line for line in mounts)
    last = " ".join(COPY_SCRIPT.replace("\\\n", " ").rsplit("exec ", 1)[1].split())
    assert last.startswith(f"{INNER_BWRAP} --unshare-user --uid 65534 --gid 65534"), last
    assert "--disable-userns" in last, last
    assert last.endswith('-- "$@"'), last


def test_without_root_the_sandbox_root_and_dev_are_read_only() -> None:
    """bubblewrap runs as the command's uid without root: the tmpfs it builds / from
    (and /dev's) would be the command's to fill, past every size bound (a red-team
    pass wrote 100 MB to /.kodo under 1 MiB bounds)."""
    argv = bwrap_argv("bwrap", layout(copy_bytes=1 << 20), {}, ["x"], LIMITS)
    at = argv.index("--chdir")
    assert argv[at - 4 : at] == ["--remount-ro", "/", "--remount-ro", "/dev"]
    rooted = bwrap_argv("bwrap", layout(root_mode=True), {}, ["x"], LIMITS, block_fd=3, info_fd=4)
    assert "--remount-ro" not in rooted, "as root they are root's, not the command's"


def test_the_copy_script_copies_links_as_links_and_runs_nothing_when_the_copy_fails() -> None:
    # the system's cp (the default PATH), not one a toolchain folder on PATH might hold
    assert 'command -p cp -a --no-preserve=ownership -- "$lower/." "$wt/"' in COPY_SCRIPT
    assert "exit 125" in COPY_SCRIPT
    # it says "copied" on the runner's pipe and drops it before the command starts: the
    # pipe is its stdin, since dash names no descriptor past 9 (a busy worker's pipe is)
    lines = COPY_SCRIPT.strip().splitlines()
    assert lines[-4:-2] == ["echo copied >&0", "exec 0</dev/null"]
    assert lines[-2].startswith(f"exec {INNER_BWRAP} ")


def test_the_overlay_script_mounts_nothing_the_command_could_use() -> None:
    """nosuid/nodev on both mounts; the lower bind and the tmpfs are unmounted before the
    command starts, so the host worktree is not reachable as a second path."""
    for line in ("nosuid,nodev,mode=0700", '"nosuid,nodev,$layers"', 'umount "$lower"'):
        assert line in OVERLAY_SCRIPT
    assert 'umount -l "$disk"' in OVERLAY_SCRIPT
    # /tmp is bounded in place (a remount): what is bound beneath it stays visible
    assert '"remount,nosuid,nodev,size=$tmpsize,nr_inodes=$tmpinodes" /tmp' in OVERLAY_SCRIPT
    assert 'mount -o remount,bind,ro,nosuid,nodev "$wt/.git"' in OVERLAY_SCRIPT  # as bound
    assert OVERLAY_SCRIPT.rstrip().endswith('exec "$@"')
    # both layer folders in one program: the upper one is the command's, as the worktree
    made = 'command -p install -d -o 65534 -g 65534 -m "$mode" "$disk/upper" "$disk/work"'
    assert made in OVERLAY_SCRIPT


def test_the_rlimits_the_root_worker_sets_are_the_ones_prlimit_would() -> None:
    names = {
        resource.RLIMIT_CPU: "cpu",
        resource.RLIMIT_AS: "as",
        resource.RLIMIT_NPROC: "nproc",
        resource.RLIMIT_FSIZE: "fsize",
        resource.RLIMIT_CORE: "core",
    }
    by_prlimit = [a.removeprefix("--") for a in LIMITS.prlimit_argv()[1:-1]]
    by_worker = [f"{names[which]}={value}:{value}" for which, value in LIMITS.rlimits()]
    assert by_worker == by_prlimit


def test_the_scripts_run_the_systems_programs_never_ones_on_the_commands_path() -> None:
    """They run before the command (the overlay's as the sandbox's root) with its PATH,
    which lists the allowlisted programs' folders first."""
    tools = {"mount", "umount", "mkdir", "chown", "chmod", "cp", "install"}
    for script in (OVERLAY_SCRIPT, COPY_SCRIPT):
        for line in script.splitlines():
            words = line.replace("if !", "").split()
            assert not (words and words[0] in tools), line
        assert "command -p" in script


def test_a_copys_tmpfs_footprint_counts_the_pages_a_tmpfs_would_use(tmp_path: Path) -> None:
    """Whole pages per file, none for an empty one, a folder or a short link (its target
    is kept beside the inode); a long link's target takes a page."""
    (tmp_path / "empty").touch()
    (tmp_path / "one").write_bytes(b"x")
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "five-k").write_bytes(b"x" * 5000)
    (tmp_path / "short").symlink_to("d")
    (tmp_path / "long").symlink_to("t" * 200)
    assert tmpfs_footprint(tmp_path) == 4096 * (1 + 2 + 1)


def test_a_checkout_thousands_of_folders_deep_is_measured_without_recursion(
    tmp_path: Path,
) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(1100):  # past Python's recursion limit, under PATH_MAX
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    try:
        assert tmpfs_footprint(tmp_path) == 0, "folders and an empty file take no page"
    finally:  # pytest's own cleanup (shutil.rmtree) recurses, and would fail on it
        subprocess.run(["rm", "-rf", "--", str(tmp_path / "d")], check=True)


def test_a_checkout_that_cannot_be_measured_is_refused_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(SandboxUnavailable, match="worktree_copy: cannot measure"):
        tmpfs_footprint(tmp_path / "a-file")


def test_a_toolchain_folder_under_tmp_is_named_for_copy_mode_to_refuse() -> None:
    """Copy mode mounts a fresh tmpfs over the sandbox's /tmp: it would hide them."""
    binds = ("/opt/tools", "/tmp", "/tmp/ci/.venv/bin", "/tmpfiles/bin", "/home/u/.venv")  # noqa: S108
    assert under_tmp(binds) == ["/tmp", "/tmp/ci/.venv/bin"]  # noqa: S108
