"""Numbers computed by a cell, put into the book's prose.

The book's build has myst-nb, whose `glue` stores a value for `{glue:md}` roles in the text.
A chapter opened on Colab (or run by the grader) has no myst-nb: there the value is printed,
so the reader still sees the number the prose would have shown.
"""

from __future__ import annotations


def glue(name: str, value, display: bool = True) -> None:
    """myst-nb's `glue(name, value, display)` where myst-nb is installed; elsewhere print `name: value`."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        print(f"{name}: {getattr(value, 'data', value)}")  # a Markdown object prints its text
        return
    myst_glue(name, value, display=display)
