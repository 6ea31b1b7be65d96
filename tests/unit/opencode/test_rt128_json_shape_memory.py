"""The shape check that guards every daemon answer must not itself cost many times the
answer in memory (red-team helper-128).

``shape_problem`` strips escapes and strings with ``re.sub``: CPython's ``re.sub``
collects every piece between matches (and the replacement of each) in a list before it
joins them, one Python object per match. An answer of 8 MiB (KODO_MAX_ANSWER_BYTES)
that is a single text part of ``\\n`` escapes (a patch or a text of empty lines, written
by the model) holds 4 M escapes: the guard's two passes held ~43x the body (~360 MB) in a
worker, before a byte was parsed. Many tiny strings (``["","",...]``: 2.8 M strings)
cost ~58x (~480 MB). The collector runs the same check on every 1 MiB event.

What holds once fixed: peak RSS added by the check stays within a few times the body.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.memory_probe import PRELUDE

BODY_BYTES = 8 * 1024 * 1024
MAX_RATIO = 10.0

_PROBE = PRELUDE + textwrap.dedent(
    """
    from shared.opencode.json_shape import shape_problem
    kind = sys.argv[1]
    n = {n}
    if kind == "escapes":
        body = b'["' + b"\\\\n" * (n // 2 - 4) + b'"]'
    else:
        body = b"[" + b'"",' * (n // 3 - 2) + b'""]'
    before = hwm()
    assert shape_problem(body) is None
    after = hwm()
    print((after - before) / len(body))
    """
)


@pytest.mark.parametrize("kind", ["escapes", "empty-strings"])
def test_the_shape_check_holds_a_few_times_the_body_at_most(kind: str) -> None:
    probe = _PROBE.format(n=BODY_BYTES)
    done = subprocess.run(
        [sys.executable, "-c", probe, kind], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    ratio = float(done.stdout.strip())
    assert ratio < MAX_RATIO, (
        f"shape_problem on an 8 MiB body of {kind} raised peak RSS by {ratio:.0f}x the body"
    )
