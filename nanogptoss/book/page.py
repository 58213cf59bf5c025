"""The book page's width, in one place: code is formatted to it (black --line-length, checked by
tests/test_book.py) and long printed lines are folded to it, so that at a 1280-px window no code
or output block scrolls sideways (book/tests/test_site.py measures it in a browser)."""

from __future__ import annotations

import textwrap

WIDTH = 78  # characters of monospace text the site's code and output boxes show at 1280 px

INDENT = "    "  # a folded line's continuation, so the reader sees where a line was folded


def fold(text: str, width: int = WIDTH) -> str:
    """`text` with every line longer than `width` folded at spaces (never inside a word,
    never at a hyphen), its continuations indented; shorter lines are left as they are."""
    return "\n".join(textwrap.fill(line, width, subsequent_indent=INDENT, break_long_words=False,
                                   break_on_hyphens=False) if len(line) > width else line
                     for line in text.split("\n"))


def unfold(text: str) -> str:
    """The inverse of fold for one folded line: its continuation lines joined back with spaces."""
    return text.replace("\n" + INDENT, " ")
