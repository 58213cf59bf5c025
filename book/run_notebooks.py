"""Execute the book's notebooks in place, so the committed files carry real outputs.

    .venv/bin/python book/run_notebooks.py                      # every chapter notebook
    .venv/bin/python book/run_notebooks.py notebooks/03_rope.ipynb

Widget state is stored in each notebook's metadata (the static site and nbval need
it), and the wall time of each notebook is printed: keep each under about 60 s on a
CPU. Notebooks whose name contains "train" are skipped unless named explicitly: they
keep the outputs of a recorded GPU run (see book/how-to-use.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def _last_redraw(line: str) -> str:
    drawn = [part for part in line.split("\r") if part.strip()]
    return drawn[-1] if drawn else line


def join_stream(pieces: list[str]) -> str:
    """The text of consecutive pieces of one stream, as one box shows it: joined as printed,
    a progress bar's carriage-return redraws reduced to their last state. The rule for both
    the committed notebooks (merge_streams) and the site (book/_ext/book_site.py)."""
    return "\n".join(_last_redraw(line) for line in "".join(pieces).split("\n"))


def merge_streams(outputs: list) -> list:
    """One box per stream: the kernel flushes stdout in pieces, which the site would show as
    a stack of boxes."""
    merged = []
    for out in outputs:
        if out.output_type == "stream" and merged and merged[-1].output_type == "stream" \
                and merged[-1].name == out.name:
            merged[-1].text += out.text
        else:
            merged.append(out)
    for out in merged:
        if out.output_type == "stream":
            out.text = join_stream([out.text])
    return merged


def drop_unshown_widget_state(nb) -> None:
    """Widget state is saved for the widgets a cell shows; without one (a progress bar that
    closed itself), the saved state would only make the site load the widget manager."""
    shown = any("application/vnd.jupyter.widget-view+json" in out.get("data", {})
                for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    if not shown:
        nb.metadata.pop("widgets", None)


def run(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    # the kernel starts in notebooks/, as it does under jupyter-book and nbval
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True, record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    drop_unshown_widget_state(nb)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str]) -> None:
    paths = [Path(p) for p in argv] or [p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
                                         if "train" not in p.name]
    for path in paths:
        if not path.exists():
            raise SystemExit(f"{path}: no such notebook")
        print(f"{path.name}: {run(path):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
