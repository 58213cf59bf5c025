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


def merge_streams(outputs: list) -> list:
    """One box per stream: the kernel flushes stdout in pieces, which the site would show as
    a stack of boxes. A progress bar's carriage-return redraws are reduced to their last state."""
    merged = []
    for out in outputs:
        if out.output_type == "stream" and merged and merged[-1].output_type == "stream" \
                and merged[-1].name == out.name:
            merged[-1].text += out.text
        else:
            merged.append(out)
    for out in merged:
        if out.output_type == "stream":
            out.text = "\n".join(_last_redraw(line) for line in out.text.split("\n"))
    return merged


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
