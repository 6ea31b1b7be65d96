"""The daemon's bubblewrap argv (pure): what is bound, in which order, what is hidden."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from devstack.oc_daemon.sandbox import DaemonSandbox, SandboxRefused, bwrap_argv, find_bwrap

CHECKOUT = Path("/srv/kodo")


BOX = DaemonSandbox(
    bwrap="/usr/bin/bwrap",
    binary=Path("/root/.cache/kodo/opencode/bin/opencode"),
    home=CHECKOUT / ".kodo/oc/home",
    config=CHECKOUT / ".kodo/oc/opencode.global.json",
    workspaces=CHECKOUT / ".kodo/workspaces",
    repo_roots=(CHECKOUT,),
    hidden=(CHECKOUT / ".kodo", CHECKOUT / ".kodo/oc"),
)


def _argv(box: DaemonSandbox) -> list[str]:
    return bwrap_argv(box, ["opencode", "serve"], links={}, system_dirs=[], etc=[])


def _mount_ops(argv: list[str]) -> list[tuple[str, str]]:
    ops = []
    for i, arg in enumerate(argv):
        if arg in ("--bind", "--ro-bind") and argv[i + 1].startswith(str(CHECKOUT)):
            ops.append((arg, argv[i + 1]))
        if arg == "--tmpfs" and argv[i + 1].startswith(str(CHECKOUT)):
            ops.append(("--tmpfs", argv[i + 1]))
    return ops


def test_kodos_state_under_a_read_only_root_is_masked_and_the_writable_binds_show_through() -> None:
    assert _mount_ops(_argv(BOX)) == [
        ("--ro-bind", "/srv/kodo"),
        ("--tmpfs", "/srv/kodo/.kodo"),  # over the checkout: up.json, tokens gone
        ("--tmpfs", "/srv/kodo/.kodo/oc"),
        ("--bind", "/srv/kodo/.kodo/workspaces"),
        ("--bind", "/srv/kodo/.kodo/oc/home"),
        ("--ro-bind", "/srv/kodo/.kodo/oc/opencode.global.json"),
    ]


def test_the_sandbox_shares_the_network_drops_capabilities_and_sets_no_environment() -> None:
    """The environment is bubblewrap's own (an allowlist): a --setenv would put the
    daemon's password or a provider key on a command line any host process can read."""
    argv = _argv(BOX)
    assert "--unshare-net" not in argv  # a loopback server, calling its LLM
    assert {"--unshare-pid", "--remount-ro"} <= set(argv)
    assert "--setenv" not in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--") :] == ["--", "opencode", "serve"]
    assert "--die-with-parent" not in argv, "kodo oc up leaves the daemon running"


@pytest.mark.parametrize(
    "workspaces", [CHECKOUT, CHECKOUT / ".kodo"], ids=["contains-state", "is-state"]
)
def test_a_writable_folder_holding_kodos_state_is_refused(workspaces: Path) -> None:
    with pytest.raises(SandboxRefused, match="oc_daemon_sandbox"):
        _argv(replace(BOX, workspaces=workspaces, repo_roots=()))


def test_a_missing_bubblewrap_names_the_rule_and_how_to_install_it() -> None:
    with pytest.raises(SandboxRefused, match=r"oc_daemon_sandbox.*apt-get install bubblewrap"):
        find_bwrap("bwrap", search_path="/nonexistent")
