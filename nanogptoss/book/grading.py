"""The teacher's grader: run a folder of student notebooks, report every checker per student.

`python -m nanogptoss exercises grade SUBMISSIONS/` executes each notebook top to bottom
in a fresh kernel (one thread per kernel: tiny models run fastest that way, and several
notebooks can run side by side with --jobs), one cell at a time, each under a time limit.
A cell that raises does not stop the notebook; a cell over the limit is interrupted and
reported, and the notebook goes on with its next cell. Then every checker the notebook
calls gets one result: passed, failed (with the checker's full message and hint), error
(its cell raised before the checker could run), timed out (at cell N) or not reached.

Beside the summary (grades.md, grades.csv, results.csv) the grader keeps each executed
notebook, so a teacher can open what the student's code printed.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

from .page import INDENT

LINE = re.compile(r"^(PASS|FAIL): (check_\w+): ?(.*)$")  # what a checker prints
# a checker called in a cell: `check_x(` outside a comment, not its definition or import
CALL = re.compile(r"^(?!\s*(?:def|from|import)\b)[^#\n]*?\b(check_\w+)\(", re.M)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

PASSED, FAILED, ERROR, TIMED_OUT, NOT_REACHED, NO_RESULT = (
    "passed", "failed", "error", "timed out", "not reached", "no result")


class CheckerResult(NamedTuple):
    checker: str
    result: str  # one of PASSED, FAILED, ERROR, TIMED_OUT, NOT_REACHED, NO_RESULT
    cell: int | None  # the cell (1-based, as counted in the notebook) that called the checker
    message: str  # the checker's whole line after "PASS/FAIL: name: ", or why there is none

    @property
    def short(self) -> str:
        """The summary table's entry."""
        where = f" at cell {self.cell}" if self.cell else ""
        return {PASSED: "PASS", FAILED: "FAIL", ERROR: f"error{where}", TIMED_OUT: f"timed out{where}",
                NOT_REACHED: "not reached", NO_RESULT: "no result"}[self.result]


class NotebookResult(NamedTuple):
    notebook: str
    status: str  # "ok", "timed out at cell N", "kernel died at cell N", "N cell(s) raised ...", "unreadable ..."
    checks: dict  # checker name -> CheckerResult, in the notebook's order
    seconds: float = 0.0
    executed: str = ""  # the executed copy, relative to the output folder

    @property
    def passed(self) -> int:
        return sum(r.result == PASSED for r in self.checks.values())


def parse_results(text: str) -> dict:
    """Checker name -> "PASS"/"FAIL" from printed output; a checker run twice keeps its last result."""
    return {name: verdict for name, (verdict, _) in _lines(text).items()}


def _lines(text: str) -> dict:
    found, last = {}, None
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            last = m.group(2)
            found[last] = (m.group(1), m.group(3))
        elif last and line.startswith(INDENT) and line.strip():  # a long line, folded for the page
            found[last] = (found[last][0], f"{found[last][1]} {line.strip()}")
        else:
            last = None
    return found


def _cell_text(cell) -> str:
    chunks = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            chunks.append(out.get("text", ""))
        elif "data" in out and "text/plain" in out["data"]:
            chunks.append(out["data"]["text/plain"])
    return "\n".join(chunks)


def _error(cell):
    return next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)


def _first_line(cell) -> str:
    lines = [ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return (lines[0][:60] + ("..." if len(lines[0]) > 60 else "")) if lines else ""


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _interrupted_line(cell) -> str:
    """Where the interrupt stopped the cell, from its traceback, else the cell's first line."""
    e = _error(cell)
    frames = [m.group(1).strip() for line in (e or {}).get("traceback", [])
              for m in re.finditer(r"^-+> *\d+ (.*)$", ANSI.sub("", line), re.M)]
    return f"interrupted at `{frames[0][:80]}`" if frames else f"`{_first_line(cell)}`"


def _kernel_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env.pop("MPLBACKEND", None)
    env["MPLBACKEND"] = "agg"  # no windows from a grader
    return env


def grade_notebook(path: Path, out_dir: Path | None = None, timeout: int = 120, kernel_name: str = "python3",
                   threads: int = 1, workdir: Path | None = None) -> NotebookResult:
    """Run one notebook cell by cell and collect its checkers' results.

    The kernel starts in `workdir` (default: the notebook's folder) with `threads` threads;
    each cell gets `timeout` seconds. The executed notebook is written to
    `out_dir/executed/NAME` when `out_dir` is given.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    path = Path(path)
    start = time.perf_counter()
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # not a notebook at all
        return NotebookResult(path.name, f"unreadable notebook ({type(exc).__name__}: {str(exc)[:200]})", {})
    workdir = Path(workdir) if workdir else path.parent
    workdir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(workdir)}})
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    done, timed_out, died = set(), set(), None
    try:
        with client.setup_kernel(env=_kernel_env(threads), cwd=str(workdir)):
            for i in code:
                cell = nb.cells[i]
                # a kernel that ignores the interrupt is shut down, which ends this notebook
                watchdog = threading.Timer(2 * timeout + 10, _kill, (client,))
                watchdog.start()
                t0 = time.perf_counter()
                try:
                    client.execute_cell(cell, i)
                except DeadKernelError:
                    died = i
                    break
                finally:
                    watchdog.cancel()
                done.add(i)
                if time.perf_counter() - t0 >= timeout and _error(cell) is not None:
                    timed_out.add(i)
    except DeadKernelError:
        died = died if died is not None else next((i for i in code if i not in done), None)
    except Exception as exc:  # the kernel did not start, or nbclient failed: report, go on to the next notebook
        return NotebookResult(path.name, f"could not run ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                              _checkers(nb, code, done, timed_out, None), time.perf_counter() - start)

    executed = ""
    if out_dir is not None:
        target = Path(out_dir) / "executed" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))
        executed = str(target.relative_to(out_dir))
    errors = [i for i in sorted(done - timed_out) if _error(nb.cells[i]) is not None]
    if died is not None:
        status = f"kernel died at cell {died + 1}"
    elif timed_out:
        status = "timed out at cell " + ", ".join(str(i + 1) for i in sorted(timed_out)) + f" (limit {timeout} s)"
    elif errors:
        e = _error(nb.cells[errors[0]])
        status = f"{len(errors)} cell(s) raised, first at cell {errors[0] + 1}: {e.get('ename')}: {e.get('evalue')}"
    else:
        status = "ok"
    return NotebookResult(path.name, status, _checkers(nb, code, done, timed_out, died),
                          round(time.perf_counter() - start, 1), executed)


def _kill(client) -> None:
    process = getattr(getattr(client.km, "provisioner", None), "process", None)
    if process is not None:
        process.kill()


def _checkers(nb, code, done, timed_out, died) -> dict:
    """One result per checker: from its printed line, else from what happened to its cell."""
    results = {}
    for i in code:
        cell = nb.cells[i]
        printed = _lines(_cell_text(cell))
        called = list(dict.fromkeys(CALL.findall(cell.source)))
        for name in called + [n for n in printed if n not in called]:
            if name in printed:
                verdict, message = printed[name]
                results[name] = CheckerResult(name, PASSED if verdict == "PASS" else FAILED, i + 1, message)
            elif name in results and results[name].result in (PASSED, FAILED):
                continue  # called again without printing: keep what it printed before
            elif i in timed_out:
                results[name] = CheckerResult(name, TIMED_OUT, i + 1, f"cell {i + 1} ran over the time limit "
                                                                       f"({_interrupted_line(cell)})")
            elif i not in done:
                why = f"the kernel died at cell {died + 1}" if died is not None else "the notebook stopped before it"
                results[name] = CheckerResult(name, NOT_REACHED, i + 1, why)
            elif (e := _error(cell)) is not None:
                results[name] = CheckerResult(name, ERROR, i + 1, f"cell {i + 1} raised {e.get('ename')}: "
                                                                   f"{e.get('evalue')}")
            else:
                results[name] = CheckerResult(name, NO_RESULT, i + 1, "the cell ran but the checker printed nothing")
    return results


def _grade_one(args):
    return grade_notebook(*args)


def grade_folder(folder, out: str | Path | None = None, timeout: int = 120, kernel_name: str = "python3",
                 jobs: int = 1, threads: int = 1) -> list[NotebookResult]:
    """Grade every *.ipynb in `folder` (not recursive) into the folder `out` (default FOLDER/graded).

    Each notebook runs in its own working folder `out`/work/NAME (so two submissions of the
    same chapter never share the files they write), `jobs` at a time, `threads` threads each.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; give the folder that holds the students' .ipynb files")
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        raise ValueError(f"no .ipynb files in {folder}")
    if timeout < 1 or jobs < 1 or threads < 1:
        raise ValueError("--timeout, --jobs and --threads must be at least 1")
    out = folder / "graded" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for path in notebooks:
        work = out / "work" / path.stem
        shutil.rmtree(work, ignore_errors=True)
        tasks.append((path, out, timeout, kernel_name, threads, work))
    print(f"grading {len(notebooks)} notebook(s), {jobs} at a time, {timeout} s per cell ...", flush=True)
    if jobs == 1:
        results = []
        for task in tasks:
            results.append(_grade_one(task))
            _progress(results[-1])
    else:
        with ProcessPoolExecutor(jobs) as pool:
            results = []
            for r in pool.map(_grade_one, tasks):
                results.append(r)
                _progress(r)
    write_summary(results, out)
    return results


def _progress(r: NotebookResult) -> None:
    print(f"  {r.notebook}: {r.passed}/{len(r.checks)} passed, {r.status} ({r.seconds:.0f} s)", flush=True)


def write_summary(results: list[NotebookResult], out: Path) -> None:
    """grades.csv (one row per student), results.csv (one row per student and checker, with the
    full messages) and grades.md (the table, then every message) in the folder `out`."""
    names = list(dict.fromkeys(name for r in results for name in r.checks))  # in the notebooks' order
    header = ["notebook", "status", "passed", "seconds"] + names
    rows = [[r.notebook, r.status, f"{r.passed}/{len(r.checks)}", f"{r.seconds:.1f}"]
            + [r.checks[n].short if n in r.checks else "" for n in names] for r in results]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "grades.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header] + rows)
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["notebook", "checker", "result", "cell", "message"])
        for r in results:
            for c in r.checks.values():
                writer.writerow([r.notebook, c.checker, c.result, c.cell or "", c.message])

    def esc(cell) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    md = ["# Grades", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    md += ["", "An empty entry: the notebook does not call that checker. Each student's checkers in full:"]
    for r in results:
        md += ["", f"## {r.notebook}", "", f"{r.status}; {r.passed}/{len(r.checks)} passed in {r.seconds:.0f} s"
               + (f"; executed notebook: `{r.executed}`" if r.executed else ""), ""]
        md += [f"- **{c.checker}**: {c.result}" + (f" (cell {c.cell})" if c.cell else "") + f": {esc(c.message)}"
               for c in r.checks.values()] or ["- no checker found in this notebook"]
    (out / "grades.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'grades.md'}, grades.csv, results.csv and the executed notebooks in {out / 'executed'}")
