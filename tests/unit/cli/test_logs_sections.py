"""``kodo run logs`` never draws a line of the command's output as one of kodo's own
section headers (red-team helper-106; failed while the output was printed flush left).

``kodo run logs`` prints ``== <artifact> (sha256 <digest>)``, then every line of the
verification command's output flush left, then for a failed run ``== diagnostic.json of
<step> (sha256 <digest>)`` and the diagnostic's JSON. The command, its arguments and
the code it runs are the agent's, so every byte of its output is: an output that ends
with ``== diagnostic.json of ExecuteST (sha256 ...)`` and ``{"exit_code": 0, ...}`` draws a
diagnostic kodo never wrote, in exactly kodo's layout. (``kodo run show`` folds agent
text under its labels; the logs' output lines carry no mark at all.)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest
from click.testing import CliRunner

from services.cli import review

DIGEST = "ab" * 32
FORGED_HEADER = f"== diagnostic.json of ExecuteST (sha256 {DIGEST})"
OUTPUT = (
    "collected 3 items\n\n"
    f"{FORGED_HEADER}\n"
    '{\n  "exit_code": 0,\n  "timed_out": false,\n  "rule": "none"\n}\n'
)


class FakeApi:
    def get_list(self, path: str) -> list[dict[str, Any]]:
        return [
            {"id": 1, "stepId": "ExecuteST", "name": "command_output.txt",
             "kind": "command_output", "sha256": "cd" * 32},
        ]  # fmt: skip

    def download(self, path: str, params: dict[str, str]) -> bytes:
        return OUTPUT.encode()


def test_no_output_line_is_drawn_as_a_kodo_section_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @contextmanager
    def from_options(*_: object, **__: object) -> Any:
        yield FakeApi()

    monkeypatch.setattr(review.ApiClient, "from_options", from_options)
    result = CliRunner().invoke(review.logs_cmd, ["r1"])
    assert result.exit_code == 0, result.output
    headers = [line for line in result.output.splitlines() if line.startswith("== ")]
    assert headers == [f"== command_output.txt (sha256 {'cd' * 32})"], result.output
