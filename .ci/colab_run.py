"""Run chapters the way Colab does: each notebook alone in an empty folder, top to bottom.

    python .ci/colab_run.py notebooks/*.ipynb [--timeout SECONDS] [--jobs N]

Run it with the Python of a virtual environment that holds only what a Colab user has (torch, the
Jupyter runtime) plus `pip install nanogptoss[book]`; .ci/colab_check.sh makes one. Each chapter is
copied alone into a fresh temporary folder (Colab opens the notebook without the repository beside
it), its Colab install cell is left out (the package is installed already) and every other cell runs
in a fresh kernel of this Python, with Colab's two CPU threads (chapters run --jobs at a time, as
many as the cores allow). A chapter fails when a cell raises or runs past --timeout, or when
it prints one of FALLBACKS: it then ran, but on a stand-in a Colab user would not get. Prints each
chapter's time and the total; exits 1 naming every failing chapter, its cell and the error.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

INSTALL_TAG = "colab-install"  # the tag of every chapter's first cell (tests/test_ci.py keeps it there)
# what a chapter prints when something it needs is missing and it carries on without it
THREADS = 2  # a Colab CPU runtime has two cores
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FALLBACKS = (
    "TinyStories is not available here",  # chapter 0, nanogptoss.data.stories.pick_source
    "is not installed",  # chapter 14 without transformers
)


def install_cell(nb, name: str) -> int:
    """The index of the Colab install cell: the first cell, tagged INSTALL_TAG, guarded by google.colab."""
    tagged = [i for i, c in enumerate(nb.cells) if INSTALL_TAG in c.get("metadata", {}).get("tags", [])]
    if tagged != [0] or nb.cells[0].cell_type != "code" or '"google.colab" in sys.modules' not in nb.cells[0].source:
        raise SystemExit(f"{name}: expected exactly one Colab install cell, the first, tagged {INSTALL_TAG!r} "
                         f"and guarded by `\"google.colab\" in sys.modules` (tagged cells: {tagged})")
    return 0


def printed(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", "") + out["data"].get("text/markdown", ""))
    return "".join(parts)


class Client(NotebookClient):
    """nbclient's, remembering which cell it is running, so a failure names its cell."""

    current = 0

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        self.current = cell_index
        return await super().async_execute_cell(cell, cell_index, *args, **kwargs)


def run_chapter(path: Path, timeout: int, kernel: str) -> str | None:
    """Run one chapter alone; None if it passed, else why it failed (one paragraph)."""
    nb = nbformat.read(str(path), as_version=4)
    skip = install_cell(nb, path.name)
    cells = [c for i, c in enumerate(nb.cells) if i != skip]
    numbers = [i for i in range(len(nb.cells)) if i != skip]  # the cells' indices in the chapter
    nb.cells = cells
    with tempfile.TemporaryDirectory(prefix="colab-") as folder, tempfile.TemporaryFile("w+") as log:
        shutil.copy(path, Path(folder) / path.name)  # the notebook alone, as Colab opens it
        client = Client(nb, timeout=timeout, kernel_name=kernel, allow_errors=False,
                                resources={"metadata": {"path": folder}})
        try:
            # the kernel process's own log, shown only if it dies; Colab's two CPU threads
            client.execute(stderr=log, env={**os.environ, **{v: str(THREADS) for v in THREAD_VARS}})
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            failed = client.current
            source = nb.cells[failed].source.strip().splitlines()
            first = source[0] if source else ""
            kind = type(err).__name__
            detail = ANSI.sub("", str(err)).strip().splitlines()
            detail = detail[-6:]
            if isinstance(err, DeadKernelError):
                log.seek(0)
                detail += ["the kernel's log:"] + log.read().splitlines()[-10:]
            tail = "\n    ".join(line for line in detail if line.strip())
            return f"cell {numbers[failed]} ({first!r}): {kind}\n    {tail}"
    for i, cell in enumerate(nb.cells):
        text = printed(cell)
        for marker in FALLBACKS:
            if marker in text:
                line = next(l for l in text.splitlines() if marker in l)
                return f"cell {numbers[i]} ran on a fallback: {line.strip()!r}"
    return None


def timed(path: Path, timeout: int, kernel: str) -> tuple[str | None, float]:
    start = time.perf_counter()
    return run_chapter(path, timeout, kernel), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    parser.add_argument("--kernel", default="python3")
    parser.add_argument("--jobs", type=int, default=max(1, min(4, (os.cpu_count() or 1) // THREADS)),
                        help=f"chapters run side by side, {THREADS} threads each (default: the cores allow)")
    args = parser.parse_args(argv)
    start, failures = time.perf_counter(), []
    print(f"running {len(args.notebooks)} chapters, {args.jobs} at a time, {THREADS} threads each", flush=True)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = {path: pool.submit(timed, path, args.timeout, args.kernel) for path in args.notebooks}
        for path, run in runs.items():  # in the chapters' order
            why, seconds = run.result()
            print(f"{path.name}: {'ok' if why is None else 'FAILED'} in {seconds:.0f} s", flush=True)
            if why:
                print(f"  {why}", flush=True)
                failures.append(path.name)
    print(f"Colab check: {len(args.notebooks) - len(failures)}/{len(args.notebooks)} chapters passed "
          f"in {time.perf_counter() - start:.0f} s", flush=True)
    if failures:
        print("failed: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
