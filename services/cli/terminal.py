"""Where the CLI's output goes: a terminal gets colour and its own width, a pipe plain lines.

rich sizes a console that is not a terminal at 80 columns and folds every longer
line there, so ``kodo run list | grep`` would see a goal split over two lines. Piped
output is therefore drawn as wide as each line needs (no wrapping) and without
colour or other escape sequences, so scripts read exactly the text a person sees.
"""

from __future__ import annotations

import sys

from rich.console import Console, RenderableType

PIPE_WIDTH = 100_000
"""Wide enough that no line a command prints is folded when stdout is not a terminal."""


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def console() -> Console:
    """A console on stdout: the terminal's width and colour, or plain, unwrapped lines."""
    if stdout_is_tty():
        return Console(highlight=False)
    return Console(
        width=PIPE_WIDTH,
        no_color=True,
        color_system=None,
        highlight=False,
        emoji=False,
        soft_wrap=True,
    )


def show(renderable: RenderableType) -> None:
    """Print on stdout: as rich draws it on a terminal; piped, each line without the
    padding rich gives table cells (``cut`` and ``awk`` see no trailing blanks)."""
    out = console()
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    sys.stdout.write("".join(f"{line.rstrip()}\n" for line in captured.get().splitlines()))
