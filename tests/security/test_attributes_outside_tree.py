"""Attributes from outside the tree cannot hide a change from the reviewer (red-team
helper-104; each failed on the code that read them).

``patch.diff`` (what the review page and ``kodo run diff`` show) is written by git in the
worktree's git dir opened bare, so no ``.gitattributes`` of a tree is read and ``*.py
-diff`` in a commit cannot turn a script into a base85 ``GIT binary patch``
(tests/security/test_gitattributes.py). git still read two attribute files in a bare
call: ``core.attributesFile``, which kodo now points at /dev/null, and
``$GIT_COMMON_DIR/info/attributes``, which git 2.39 cannot be told to skip: a repository
setting attributes there is refused (rule ``git_dir``), at submit and, put there after,
when the change is shown.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security import attacks
from tests.security.harness import Hostile, assert_fails_closed

pytestmark = pytest.mark.security

HIDING = "*.py -diff\n"
SCRIPT = "print('visible check')\nprint('RAN-' + 'SHOWN')\n"


def _fixture(hostile: Hostile, name: str) -> str:
    return hostile.fixture(
        name,
        plan=attacks.plan(("check.py", "add")),
        patch=attacks.patch(attacks.add_file("check.py", SCRIPT)),
        build=attacks.build("python3", "check.py"),
    )


def _info_attributes(repo: Path) -> None:
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text(HIDING)


def test_an_attributes_file_the_repository_config_names_cannot_hide_a_change(
    hostile: Hostile,
) -> None:
    """``core.attributesFile`` in the repository's config saying ``*.py -diff``: the
    reviewer still reads the script's added lines in ``patch.diff``."""
    name = "outside-attrs-config"
    repo = hostile.repo(name)
    (repo / ".git" / "hidden-attributes").write_text(HIDING)
    with (repo / ".git" / "config").open("a") as config:
        config.write(f"[core]\n\tattributesFile = {repo / '.git' / 'hidden-attributes'}\n")
    hostile.give(repo)

    outcome = hostile.drive(repo, _fixture(hostile, name))

    patch = outcome.artifact("patch.diff") or b""
    assert b"GIT binary patch" not in patch, patch[:2000]
    assert b"Binary files" not in patch, patch[:2000]
    assert b"+print('RAN-' + 'SHOWN')\n" in patch, (patch[:2000], outcome.describe())


def test_a_repository_setting_info_attributes_is_refused_at_submit(hostile: Hostile) -> None:
    name = "outside-attrs-info"
    repo = hostile.repo(name)
    _info_attributes(repo)
    hostile.give(repo)

    reply = hostile.http.post(
        "/intents",
        json={"repo": str(repo), "goal": "Tidy", "base_ref": "HEAD"},
        headers=hostile.as_(hostile.submitter),
    )

    assert reply.status_code == 400, reply.text
    assert "git_dir: " in reply.text
    assert "info/attributes sets attributes for every tree" in reply.text


def test_info_attributes_put_there_after_the_submit_stop_the_change_being_shown(
    hostile: Hostile,
) -> None:
    """Written while the plan waits for approval: the run fails closed naming the rule,
    and no patch.diff a reviewer cannot read is ever recorded."""
    name = "outside-attrs-later"
    repo = hostile.repo(name)
    run_id = hostile.submit(repo, _fixture(hostile, name))
    assert hostile.wait(run_id, {"waiting_input"}, 90)["status"] == "waiting_input"
    _info_attributes(repo)

    assert hostile.approve(run_id).status_code == 200
    hostile.wait(run_id, set(), 90)
    outcome = hostile.collect(run_id)

    assert_fails_closed(outcome, "git_dir")
    patch = outcome.artifact("patch.diff") or b""
    assert b"GIT binary patch" not in patch, patch[:2000]
