"""The daemon's bubblewrap argv (pure): what is bound, in which order, what is hidden."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from devstack.oc_daemon.sandbox import (
    ETC_FILES,
    DaemonSandbox,
    SandboxRefused,
    bwrap_argv,
    find_bwrap,
)

CHECKOUT = Path("/srv/kodo")


BOX = DaemonSandbox(
    bwrap="/usr/bin/bwrap",
    binary=Path("/root/.cache/kodo/opencode/bin/opencode"),
    home=CHECKOUT / ".kodo/oc/home",
    config=CHECKOUT / ".kodo/oc/opencode.global.json",
    workspaces=CHECKOUT / ".kodo/workspaces",
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


def test_only_the_workspaces_home_and_config_are_bound_and_no_repository_is() -> None:
    """kodo's state is never bound, so there is nothing to mask; a repository (or a
    checkout holding kodo) is not bound at all, whatever KODO_REPO_ROOTS says."""
    assert _mount_ops(_argv(BOX)) == [
        ("--bind", "/srv/kodo/.kodo/workspaces"),
        ("--bind", "/srv/kodo/.kodo/oc/home"),
        ("--ro-bind", "/srv/kodo/.kodo/oc/opencode.global.json"),
    ]
    assert "/srv/kodo" not in _argv(BOX)


def test_kodos_state_inside_the_daemons_home_is_masked_under_it() -> None:
    """A hidden folder below a bind lands over it (parents first)."""
    box = replace(BOX, hidden=(*BOX.hidden, BOX.home / "secrets"))
    ops = _mount_ops(_argv(box))
    assert ops.index(("--bind", "/srv/kodo/.kodo/oc/home")) < ops.index(
        ("--tmpfs", "/srv/kodo/.kodo/oc/home/secrets")
    )


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
        _argv(replace(BOX, workspaces=workspaces))


def test_a_missing_bubblewrap_names_the_rule_and_how_to_install_it() -> None:
    with pytest.raises(SandboxRefused, match=r"oc_daemon_sandbox.*apt-get install bubblewrap"):
        find_bwrap("bwrap", search_path="/nonexistent")


def test_the_hosts_tls_private_keys_are_never_bound() -> None:
    """The daemon is root (no capabilities) and so the owner of root's 0600 keys: only
    the certificate folders are shown, never /etc/ssl or /etc/pki whole."""
    private = ("/etc/ssl/private", "/etc/pki/tls/private", "/etc/pki/CA/private")
    for entry in ETC_FILES:
        assert not any(Path(key).is_relative_to(entry) for key in private), entry
    assert "/etc/ssl/certs" in ETC_FILES
