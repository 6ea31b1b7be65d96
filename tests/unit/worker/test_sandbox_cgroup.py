"""The pure half of the sandbox's cgroup: where the worker's cgroups are, what to write."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import pytest

from services.worker.sandbox.cgroup_plan import (
    JOIN_SHIM,
    SHELL,
    Hierarchy,
    Owner,
    child_name,
    counter,
    join_argv,
    limit_writes,
    locate,
    owner_of,
    parse_mountinfo,
    parse_proc_cgroup,
    removal_pauses,
    start_ticks,
)

V1_CGROUP = """9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
2:cpu,cpuacct:/
0::/
"""
V1_MOUNTS = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_CGROUP = "0::/system.slice/kodo.service\n"
V2_MOUNTS = "25 20 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_proc_cgroup_maps_each_controller_and_the_unified_entry() -> None:
    found = parse_proc_cgroup(V1_CGROUP)
    assert found["memory"] == "/process_api/abc"
    assert found["cpuacct"] == "/"
    assert found["pids"] == "/"
    assert found[""] == "/"


def test_mountinfo_keeps_only_cgroup_mounts_with_their_controllers() -> None:
    mounts = parse_mountinfo(V1_MOUNTS)
    assert [m.point for m in mounts] == [
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
    ]
    assert mounts[1].controllers == {"memory"}
    assert mounts[3].fstype == "cgroup2"


def test_v1_uses_the_memory_pids_and_cpu_hierarchies_at_the_workers_own_cgroups() -> None:
    assert locate(V1_CGROUP, V1_MOUNTS) == [
        Hierarchy(1, "/sys/fs/cgroup/cpu,cpuacct", frozenset({"cpu"})),
        Hierarchy(1, "/sys/fs/cgroup/memory/process_api/abc", frozenset({"memory"})),
        Hierarchy(1, "/sys/fs/cgroup/pids", frozenset({"pids"})),
    ]


def test_v2_uses_the_workers_unified_cgroup() -> None:
    """(whether its cpu controller is delegated is asked at IO time: optional)"""
    assert locate(V2_CGROUP, V2_MOUNTS) == [
        Hierarchy(
            2, "/sys/fs/cgroup/system.slice/kodo.service", frozenset({"memory", "pids", "cpu"})
        )
    ]


def test_a_container_mount_showing_a_sub_root_maps_paths_relative_to_it() -> None:
    mounts = "35 31 0:32 /docker/x /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert locate("4:memory:/docker/x/sub\n", mounts) == [
        Hierarchy(1, "/sys/fs/cgroup/memory/sub", frozenset({"memory"}))
    ]


def test_nothing_is_found_under_another_mount_root() -> None:
    assert locate(V1_CGROUP, V1_MOUNTS, Path("/nonexistent")) == []
    assert locate(V2_CGROUP, V2_MOUNTS, Path("/nonexistent")) == []


def test_a_changed_mount_table_or_cgroup_is_located_afresh() -> None:
    """The answer is remembered by the texts: the worker moved to another cgroup, or a
    hierarchy mounted or gone, is what the next execution uses."""
    assert locate(V2_CGROUP, V2_MOUNTS)[0].directory.endswith("/kodo.service")
    moved = "0::/system.slice/kodo-2.service\n"
    assert locate(moved, V2_MOUNTS)[0].directory.endswith("/kodo-2.service")
    assert locate(V1_CGROUP, V2_MOUNTS)[0].version == 2
    assert locate(V1_CGROUP, V1_MOUNTS)[0].version == 1  # v1 memory mounted since
    assert locate(V2_CGROUP, "") == []


def test_each_caller_gets_a_list_of_its_own() -> None:
    first = locate(V1_CGROUP, V1_MOUNTS)
    first.clear()
    assert len(locate(V1_CGROUP, V1_MOUNTS)) == 3


def test_v1_limits_memory_with_swap_when_the_kernel_counts_it() -> None:
    files = {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}
    assert limit_writes(1, frozenset({"memory"}), 128, 16, files) == [
        ("memory.limit_in_bytes", "128"),
        ("memory.memsw.limit_in_bytes", "128"),
    ]
    assert limit_writes(1, frozenset({"memory"}), 128, 16, {"memory.limit_in_bytes"}) == [
        ("memory.limit_in_bytes", "128")
    ]
    assert limit_writes(1, frozenset({"pids"}), 128, 16, set()) == [("pids.max", "16")]


def test_v2_limits_memory_forbids_swap_and_kills_the_group_together() -> None:
    files = {"memory.max", "memory.swap.max", "memory.oom.group", "pids.max"}
    assert limit_writes(2, frozenset({"memory", "pids"}), 128, 16, files) == [
        ("memory.max", "128"),
        ("memory.swap.max", "0"),
        ("memory.oom.group", "1"),
        ("pids.max", "16"),
    ]


def test_a_cpu_quota_and_a_low_weight_bound_a_commands_share_of_the_cpus() -> None:
    """A command forking spinners, each in a session of its own, left a host process a
    tenth of a core (red-team helper-130)."""
    assert limit_writes(1, frozenset({"cpu"}), 128, 16, set(), cpus=1.5) == [
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "150000"),
        ("cpu.shares", "256"),
    ]
    assert limit_writes(2, frozenset({"cpu"}), 128, 16, set(), cpus=0.001) == [
        ("cpu.max", "1000 100000"),  # the kernel's least quota
        ("cpu.weight", "25"),
    ]
    assert limit_writes(2, frozenset({"cpu"}), 128, 16, set(), cpus=0) == []


MAKER = Owner(pid_ns=4026531836, pid=4242, ticks=987654)


def test_a_child_name_carries_the_run_id_its_maker_and_nothing_that_walks_paths() -> None:
    assert (
        child_name("0b7e-run", MAKER, "ab12") == "kodo-exec-0b7e-run-o4026531836.4242.987654-ab12"
    )
    assert child_name("../../etc", MAKER, "ab12").startswith("kodo-exec-______etc-o")
    assert "/" not in child_name("a/b\nc", MAKER, "x")


def test_the_maker_is_read_back_from_the_name_whatever_the_run_id_holds() -> None:
    for label in ("0b7e-run", "x-o1.2.3", "-o9", "../a.b", ""):
        assert owner_of(child_name(label, MAKER, "ab12cd34")) == MAKER


def test_a_name_without_a_maker_is_nobodys() -> None:
    for name in (
        "kodo-exec-0b7e-run-ab12",  # made before names carried their maker
        "kodo-exec-run-o1.2-ab12",
        "kodo-exec-run-o1.2.3.4-ab12",
        "kodo-exec-run-o1.2.3-",
        "other-exec-run-o1.2.3-ab12",
        "kodo-exec-run-o1.2.3-ab12/..",
    ):
        assert owner_of(name) is None, name


def test_a_start_time_is_field_22_even_past_a_command_name_with_spaces_and_parens() -> None:
    fields = " ".join(str(n) for n in range(3, 23))  # fields 3..22 after the name
    assert start_ticks(f"77 (a) b) (c) {fields} 23 24") == 22
    assert start_ticks("77 (short) S 1") is None


def test_counters_are_read_from_flat_keyed_files() -> None:
    assert counter("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill") == 3
    assert counter("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "max") == 2
    assert counter("", "oom_kill") == 0


def test_the_join_shim_passes_the_command_verbatim_after_its_own_files() -> None:
    argv = join_argv(["/cg/m/cgroup.procs", "/cg/p/cgroup.procs"], ["bwrap", "--", "$(x)", "--"])
    assert argv[:3] == [SHELL, "-c", JOIN_SHIM]
    assert argv[4:] == [
        "/cg/m/cgroup.procs",
        "/cg/p/cgroup.procs",
        "--",
        "bwrap",
        "--",
        "$(x)",
        "--",
    ]
    with pytest.raises(ValueError, match="cannot be --"):
        join_argv(["--"], ["x"])


def test_a_busy_cgroup_is_tried_again_within_a_millisecond_then_less_and_less_often() -> None:
    """Its last process leaves a fraction of a millisecond after the command ends: a
    first pause of 20 ms made every execution that much longer."""
    pauses = list(islice(removal_pauses(), 10))
    assert pauses[:3] == [0.0005, 0.001, 0.002]
    assert pauses[-4:] == [0.02] * 4, "then every 20 ms until the deadline"
    assert pauses == sorted(pauses)
