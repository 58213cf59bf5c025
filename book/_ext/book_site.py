"""Small fixes to the generated pages, so that a fresh browser shows no console errors.

* sphinx-thebe registers its inline configuration script once per reading pass, and
  Jupyter Book's build emits that event twice: the page then declares the same `const`
  twice and the browser reports a SyntaxError. Identical scripts are kept once here.
* The widget manager typesets labels through MathJax 2's `MathJax.Hub`, which MathJax 3
  lacks (a TypeError on every page with widgets): `mathjax2-hub.js` forwards the calls.
  It is loaded before MathJax's own configuration (priority 500) so it sees every
  object that becomes `window.MathJax`. Hidden properties keep MathJax 3 from reading
  the forwarder as configuration.
* A kernel flushes a stream in pieces (a print per step, a progress bar's redraws), and
  myst-nb renders each piece as a box of its own. The build executes the chapters itself
  (from its cache), so book/run_notebooks.py's merge never reaches what the site shows:
  the same merge is applied here to every page's rendered outputs, one box per stream.
* static/page-fit.css: code and output boxes hold the 78 columns the chapters are formatted
  to at a 1280-px window; the library's printed source wraps.
* The generation explorer (chapter 12) runs the shipped models in the reader's browser: their
  weights and tokenizer are copied to _static/nanogptoss/, which the explorer fetches, relative
  to the page, only when a reader presses Generate (they are not in any page or widget state).
"""

import shutil
import sys
from pathlib import Path

from docutils import nodes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # book/, for run_notebooks' merge rule
from run_notebooks import join_stream  # noqa: E402


def _drop_repeated_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # the same file or inline body (an attribute), whatever priority each copy was given;
        # an inline script has filename None or "" depending on who added it
        key = (str(getattr(script, "filename", script) or ""), tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _stream(node) -> tuple | None:
    """The stream a rendered output box shows (stdout or stderr), None for anything else."""
    if isinstance(node, nodes.literal_block) and "output" in node["classes"] \
            and ("stream" in node["classes"] or "stderr" in node["classes"]):
        return tuple(node["classes"])
    return None


def merge_stream_boxes(app, doctree) -> None:
    """One box per stream in each cell's output: consecutive boxes of the same stream joined."""
    for output in list(doctree.findall(nodes.container)):
        if "cell_output" not in output["classes"]:
            continue
        kept = []
        for child in list(output.children):
            if kept and _stream(child) and _stream(child) == _stream(kept[-1]):
                output.remove(child)
                kept[-1].append(nodes.Text(child.astext()))
            else:
                kept.append(child)
        for box in kept:
            if _stream(box):
                text = join_stream([box.astext()])
                box.children = []
                box.append(nodes.Text(text))
                box.rawsource = text  # plain text, so Sphinx still highlights it (ANSI colours)


def copy_explorer_files(app, exception) -> None:
    """The files the generation explorer fetches, into _static/nanogptoss/ of the built site."""
    if exception is not None or app.builder.format != "html":
        return
    from nanogptoss.book.widgets import browser_files

    out = Path(app.outdir) / "_static" / "nanogptoss"
    out.mkdir(parents=True, exist_ok=True)
    for name, path in browser_files().items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the generation explorer needs it on the site "
                                    "(the shipped weights come from `python -m nanogptoss.book.export`)")
        shutil.copyfile(path, out / name)


def setup(app):
    app.config.html_static_path.append(str(Path(__file__).resolve().parent / "static"))
    app.add_css_file("page-fit.css")
    app.add_js_file("mathjax2-hub.js", priority=200)
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)  # after the others add theirs
    app.connect("doctree-read", merge_stream_boxes)
    app.connect("build-finished", copy_explorer_files)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
