"""A small git repository to run the demo and the end-to-end tests against."""

from __future__ import annotations

import subprocess
from pathlib import Path

FILES = {
    "README.md": "# calc\n\nA tiny calculator used to demonstrate kodo.\n",
    "calc.py": '"""A tiny calculator."""\n\n\ndef add(a: int, b: int) -> int:\n    return a + b\n',
    "test_calc.py": (
        "import unittest\n\nfrom calc import add\n\n\n"
        "class AddTest(unittest.TestCase):\n"
        "    def test_adds(self) -> None:\n        self.assertEqual(add(2, 3), 5)\n\n\n"
        'if __name__ == "__main__":\n    unittest.main()\n'
    ),
}


def create_sample_repo(path: Path) -> Path:
    """Create (or reuse) a git repo at ``path`` with one commit on ``main``."""
    if (path / ".git").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    for name, content in FILES.items():
        (path / name).write_text(content)
    ident = [
        "-c",
        "user.name=kodo-demo",
        "-c",
        "user.email=demo@localhost",
        "-c",
        "commit.gpgsign=false",
    ]
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        [*ident, "commit", "-q", "-m", "Initial calculator"],
    ):
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, timeout=30)
    return path
