"""Compare CLI output without depending on the terminal width or the length of a path.

The CLI's own consoles do not wrap when they do not write to a terminal (``agent.cli._common``),
but typer draws usage errors in a rich panel sized to ``$COLUMNS`` or the terminal. ``unwrapped``
turns either into one line of words, so a check like ``"unknown role" in unwrapped(output)`` holds
at any width.
"""

from __future__ import annotations

import re

_PANEL_BORDER = re.compile(r"[│╭╮╰╯─┃┏┓┗┛━]")


def unwrapped(text: str) -> str:
    """Text as one line: panel borders dropped, line breaks and runs of blanks joined to one space.

    Parameters
    ----------
    text : str
        Output captured from the CLI (stdout, stderr or both).

    Returns
    -------
    str
        The words of ``text`` separated by single spaces.
    """
    return " ".join(_PANEL_BORDER.sub(" ", text).split())
