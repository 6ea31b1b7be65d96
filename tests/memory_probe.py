"""The start of a child Python process that measures what a call adds to its memory.

A child forked from pytest starts with pytest's own high-water mark, which
``ru_maxrss`` reports and which hid up to 130 MB of growth (red-team helper-128); the
child's ``VmHWM`` from ``/proc/self/status`` is its own. :data:`PRELUDE` defines
``hwm()`` and puts the checkout on ``sys.path``; a probe's text follows it.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = rf"""
import re, sys
def hwm():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
sys.path.insert(0, {str(ROOT)!r})
"""
