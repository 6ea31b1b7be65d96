"""An off-schema answer costs the worker memory and time bounded by the violations it
shows, not by how many it holds (red-team helper-128).

``validate_answer`` sorted *every* error jsonschema found before showing twenty of
them. A plan whose ``files`` is ``[1,1,1,...]`` is one error per item (each a
``ValidationError`` with its deques of path and schema path, about 3.5 kB), and the
container cap of ``shape_problem`` counts arrays and objects, not scalars: 200 000 items
(a 400 kB answer, a twentieth of KODO_MAX_ANSWER_BYTES) held 710 MB and 7.7 s of CPU in
the worker; 8 MiB of ``1,`` is 4 M items, ~14 GB. Once per schema retry.

What holds once fixed: the violation is still reported (``maxItems``, and the count said
as "more"), in bounded memory and well under two seconds.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.memory_probe import PRELUDE

ITEMS = 100_000  # a 200 kB answer
MAX_EXTRA_RSS = 50 << 20  # 250 times the answer, generously
MAX_CPU_S = 2.0

_PROBE = PRELUDE + textwrap.dedent(
    """
    import time
    from shared.domain.contracts import PLAN_OUTPUT_SCHEMA, ContractViolation, validate_answer
    from shared.opencode.json_shape import shape_problem, strict_loads
    body = b'{{"files":[' + b",".join([b"1"] * {items}) + b']}}'
    assert shape_problem(body) is None  # the guard in front lets it through
    answer = strict_loads(body.decode())
    before = hwm()
    started = time.process_time()
    try:
        validate_answer(PLAN_OUTPUT_SCHEMA, answer)
    except ContractViolation as exc:
        said = str(exc)
    else:
        raise SystemExit("accepted")
    cpu = time.process_time() - started
    extra = hwm() - before
    print(extra, cpu, "maxItems" in said or "too long" in said)
    """
)


def test_an_answer_of_many_wrong_items_is_refused_in_bounded_memory_and_time() -> None:
    probe = _PROBE.format(items=ITEMS)
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    extra, cpu, named = done.stdout.split()
    assert named == "True", done.stdout
    assert int(extra) < MAX_EXTRA_RSS, (
        f"validate_answer held {int(extra) >> 20} MB for a 200 kB answer"
    )
    assert float(cpu) < MAX_CPU_S, (
        f"validate_answer spent {float(cpu):.1f} s of CPU on a 200 kB answer"
    )
