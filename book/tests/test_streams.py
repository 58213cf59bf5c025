"""book/_ext/book_site.py merges a cell's flushed stream pieces into one box, as the site
shows them (the build executes the chapters itself, so book/run_notebooks.py's merge of the
committed outputs does not reach the pages). No browser needed."""

from __future__ import annotations

import sys
from pathlib import Path

from docutils import nodes
from docutils.utils import new_document

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_ext"))
from book_site import merge_stream_boxes  # noqa: E402


def box(text: str, kind: str = "stream") -> nodes.literal_block:
    node = nodes.literal_block(text, text, language="myst-ansi")
    node["classes"] += ["output", kind]
    return node


def cell_output(*children) -> tuple:
    doc = new_document("test")
    out = nodes.container(classes=["cell_output"])
    for child in children:
        out += child
    doc += out
    return doc, out


def test_flushed_pieces_become_one_box():
    image = nodes.image(uri="x.png")
    doc, out = cell_output(box("token "), box("by "), box("token\n"), image, box("after\n"), box("more\n"))
    merge_stream_boxes(None, doc)
    kinds = [type(c).__name__ for c in out.children]
    assert kinds == ["literal_block", "image", "literal_block"]  # the order around the figure is kept
    assert out.children[0].astext() == "token by token\n" and out.children[0].rawsource == "token by token\n"
    assert out.children[2].astext() == "after\nmore\n"


def test_stdout_and_stderr_stay_apart_and_a_progress_bar_keeps_its_last_state():
    doc, out = cell_output(box("a\n"), box(" 10%\r 50%\r100%\n", "stderr"), box("b\n"))
    merge_stream_boxes(None, doc)
    assert [c.astext() for c in out.children] == ["a\n", "100%\n", "b\n"]
    assert "stderr" in out.children[1]["classes"]
