"""The teacher's grader: run a folder of student notebooks, report every checker per student.

`python -m nanogptoss exercises grade SUBMISSIONS/` executes each notebook top to bottom
in a fresh kernel (one thread per kernel: tiny models run fastest that way, and several
notebooks can run side by side with --jobs), one cell at a time, each under a time limit.
A cell that raises does not stop the notebook; a cell over the limit is interrupted and
reported, and the notebook goes on with its next cell. Then every checker the notebook
calls gets one result: passed, failed (with the checker's full message and hint), error
(its cell raised before the checker could run), timed out (at cell N) or not reached.

The verdict never comes from what the notebook printed: the student's code could print
`PASS: ...` or replace the checker, torch or anything else in its kernel. After the student's
cells, the grader runs a cell of its own per checker that calls the student's function through
a freshly imported checker and records, into a file named by a secret drawn for this run, only
what the function returned; the grader then runs the checker again in its own process, where
no student code ever ran, with a stand-in that returns those recorded values. So the verdict
is the clean checker's, on the student's own outputs.

The kernel gets a small environment (KERNEL_ENV: no API keys or other secrets of the teacher),
each cell a time limit, each notebook a total time limit and a cap on the output it may keep.

Beside the summary (grades.md, grades.csv, results.csv) the grader keeps each executed
notebook, so a teacher can open what the student's code printed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import multiprocessing
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

from .page import INDENT

LINE = re.compile(r"^(PASS|FAIL): (check_\w+): ?(.*)$")  # what a checker prints
# a checker called in a cell: `check_x(` outside a comment, not its definition or import
CALL = re.compile(r"^(?!\s*(?:def|from|import)\b)[^#\n]*?\b(check_\w+)\(", re.M)
# the call's first argument, i.e. the student's function (a name or any expression)
CALL_ARG = re.compile(r"\b(check_\w+)\(\s*([^,()]+?)\s*[,)]")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
# all the kernel sees of the grader's environment: what Python, Jupyter and the book need, no secrets
KERNEL_ENV = ("PATH", "HOME", "USER", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TEMP", "TMP",
              "SYSTEMROOT", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "TIKTOKEN_CACHE_DIR", "NANOGPTOSS_DATA",
              "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "CUDA_VISIBLE_DEVICES",
              "JUPYTER_PATH", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR",
              "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR")
TOTAL_TIMEOUT = 3600  # seconds for all of one notebook's cells (--total-timeout)
MAX_OUTPUT = 10_000_000  # bytes of output one notebook may keep (--max-output); the rest is dropped
INSTALL = 'pip install "nanogptoss[book]"'  # what brings every module the chapters import

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
    missing: tuple = ()  # modules the chapters import that the grading environment lacks and this notebook needed

    @property
    def passed(self) -> int:
        return sum(r.result == PASSED for r in self.checks.values())


def parse_results(text: str) -> dict:
    """Checker name -> "PASS"/"FAIL" from printed output; a checker run twice keeps its last result.
    For reading what a notebook showed; a grade never comes from it (anyone can print a PASS line)."""
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
    """The student's kernel's whole environment: KERNEL_ENV's variables only (never the teacher's keys)."""
    env = {name: os.environ[name] for name in KERNEL_ENV if name in os.environ}
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["MPLBACKEND"] = "agg"  # no windows from a grader
    return env


# -- the modules the chapters import, and whether the kernel has them (issue: a teacher's venv) -----

def book_modules() -> list[str]:
    """The import names of nanogptoss and of what `pip install "nanogptoss[book]"` brings."""
    try:
        from importlib.metadata import PackageNotFoundError, requires
        reqs = requires("nanogptoss") or []
    except PackageNotFoundError:  # run from a checkout that was never installed: its pyproject says
        import tomllib
        project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
        reqs = project["dependencies"] + [f'{r}; extra == "book"' for r in project["optional-dependencies"]["book"]]
    names = {"nanogptoss"}
    for req in reqs:
        if ";" in req and 'extra == "book"' not in req.replace("'", '"'):
            continue
        names.add(re.match(r"[A-Za-z0-9_.-]+", req).group().lower().replace("-", "_").replace(".", "_"))
    return sorted(names)


PROBE = """\
import importlib.util as _u
print("nanogptoss-probe:", [_m for _m in {modules!r} if _u.find_spec(_m) is None])
del _u"""
MISSING = re.compile(r"^No module named '([\w.]+)'")


# -- the grader's own check: record the student's outputs in the kernel, judge them outside --------

GRADER_CELL = """\
def _nanogptoss_grade():
    import sys
    old = sys.modules.get("nanogptoss.book.exercises")
    for name in ("nanogptoss.book.exercises", "nanogptoss.book.grading"):
        sys.modules.pop(name, None)  # a fresh import: whatever the notebook did to these modules is gone
    from nanogptoss.book.grading import record_outputs
    record_outputs({checker!r}, {expr!r}, {path!r}, {nonce!r}, globals(), old)
_nanogptoss_grade()
del _nanogptoss_grade"""

RECORD_LIMIT = 2**28  # bytes: a checker's calls return far less; a larger record is no record
TENSOR_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


def _encode(value, tensors: dict, key: str):
    """A JSON-ready description of a returned value; tensors go into `tensors` (a safetensors file)."""
    import torch

    if isinstance(value, torch.Tensor) and str(value.dtype).removeprefix("torch.") in TENSOR_DTYPES \
            and value.layout == torch.strided:
        name = f"{key}.{len(tensors)}"
        tensors[name] = value.detach().to("cpu").contiguous().clone()
        return {"tensor": name}
    if value is None:
        return {"value": None}
    for kind in (bool, int, float, str):  # a subclass (numpy's float64) as its plain value
        if isinstance(value, kind):
            return {"value": kind(value)}
    if type(value) in (tuple, list):
        return {"seq": type(value).__name__, "items": [_encode(v, tensors, key) for v in value]}
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # a numpy scalar: its value
        return _encode(value.item(), tensors, key)
    return {"type": type(value).__name__}


def record_outputs(checker: str, expr: str, path: str, nonce: str, namespace: dict, old_exercises=None) -> None:
    """Run in the student's kernel by the grader's cell: call `checker` on the student's function
    (`expr` evaluated in the notebook's namespace) and write what the function returned at each call
    to `path` (.json + .safetensors). The checker's verdict here is not used."""
    from safetensors.torch import save_file

    from nanogptoss.book import exercises

    calls, tensors = [], {}
    record = {"nonce": nonce, "checker": checker, "calls": calls}
    stand_ins = [exercises._stand_in_calls] + [getattr(old_exercises, "_stand_in_calls", [])]
    try:
        fn = eval(expr, namespace)
    except Exception as exc:  # the function is gone or never was
        record["missing"] = f"{type(exc).__name__}: {exc}"
        fn = None

    def recorder(*args, **kwargs):
        for names in stand_ins:
            del names[:]
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:
            calls.append({"raised": [type(exc).__name__, str(exc)[:2000]], "stand_in": any(stand_ins)})
            raise
        calls.append({"out": _encode(out, tensors, str(len(calls))), "stand_in": any(stand_ins)})
        return out

    if fn is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                exercises.CHECKERS[checker](recorder if callable(fn) else fn)
            except Exception as exc:
                record["checker_raised"] = f"{type(exc).__name__}: {exc}"
        if not callable(fn):
            record["not_callable"] = type(fn).__name__
    save_file(tensors, path + ".safetensors")
    with open(path + ".json", "w", encoding="utf-8") as f:
        json.dump(record, f)


def _decode(desc, tensors: dict):
    if "tensor" in desc:
        return tensors[desc["tensor"]]
    if "value" in desc:
        return desc["value"]
    if "seq" in desc:
        items = [_decode(d, tensors) for d in desc["items"]]
        return tuple(items) if desc["seq"] == "tuple" else items
    return type(str(desc.get("type", "object")), (), {})()  # a value of that type's name, for the message


def judge_recording(checker: str, path: str, nonce: str) -> tuple[bool, str] | None:
    """The clean checker's verdict, in this process, on the recorded outputs; None when there is no
    valid recording. The checker calls a stand-in that returns, call by call, what the student's
    function returned in the kernel."""
    from safetensors.torch import load_file

    from . import exercises

    try:
        if os.path.getsize(path + ".json") + os.path.getsize(path + ".safetensors") > RECORD_LIMIT:
            return None
        with open(path + ".json", encoding="utf-8") as f:
            record = json.load(f)
        tensors = load_file(path + ".safetensors")
    except Exception:  # absent, or not what record_outputs writes
        return None
    if not isinstance(record, dict) or record.get("nonce") != nonce or record.get("checker") != checker:
        return None
    if "missing" in record:
        return False, f"the grader could not find the function the notebook passed to {checker} at its end " \
                      f"({record['missing']})"
    calls = iter(record.get("calls", []))

    def replay(*args, **kwargs):
        call = next(calls, None)
        if call is None:
            raise RuntimeError("the notebook's kernel answered fewer calls than the checker makes")
        if call.get("stand_in"):
            exercises._stand_in_calls.append(checker)
        if "raised" in call:
            name, message = call["raised"]
            raise type(str(name), (Exception,), {})(message)
        return _decode(call["out"], tensors)

    if "not_callable" in record:
        replay = type(str(record["not_callable"]), (), {})()
    with contextlib.redirect_stdout(io.StringIO()):
        result = exercises.CHECKERS[checker](replay)
    return bool(result.passed), result.message


def _calls(nb, code) -> dict:
    """checker name -> (the cell index of its last call, the expression passed to it), from the sources."""
    found = {}
    for i in code:
        source = nb.cells[i].source
        for name in dict.fromkeys(CALL.findall(source)):
            args = [a for n, a in CALL_ARG.findall(source) if n == name]
            found[name] = (i, args[-1] if args else None)
    return found


def grade_notebook(path: Path, out_dir: Path | None = None, timeout: int = 120, kernel_name: str = "python3",
                   threads: int = 1, workdir: Path | None = None, total_timeout: int = TOTAL_TIMEOUT,
                   max_output: int = MAX_OUTPUT) -> NotebookResult:
    """Run one notebook cell by cell, then the grader's own check of each checker it calls.

    The kernel starts in `workdir` (default: the notebook's folder) with `threads` threads and
    KERNEL_ENV's variables only; each cell gets `timeout` seconds and all the notebook's cells
    together `total_timeout`; the outputs it keeps are cut at `max_output` bytes. The executed
    notebook is written to `out_dir/executed/NAME` when `out_dir` is given.
    """
    import nbformat
    from nbclient.exceptions import DeadKernelError

    path = Path(path)
    start = time.perf_counter()
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:  # not a notebook at all
        return NotebookResult(path.name, f"unreadable notebook ({type(exc).__name__}: {str(exc)[:200]})", {})
    workdir = Path(workdir) if workdir else path.parent
    workdir.mkdir(parents=True, exist_ok=True)
    client = _client_class()(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=True,
                             interrupt_on_timeout=True, resources={"metadata": {"path": str(workdir)}})
    client.output_limit, client.output_bytes, client.output_cut = max_output, 0, None
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    calls = _calls(nb, code)
    done, timed_out, died, over_total = set(), set(), None, None
    missing_here, verdicts = [], {}
    secret = tempfile.mkdtemp(prefix="nanogptoss-grade-")  # outside the notebook's folder; its names unguessable
    nonce = secrets.token_hex(16)
    try:
        with client.setup_kernel(env=_kernel_env(threads), cwd=str(workdir)):
            # before any student code runs: which of the chapters' modules this kernel lacks
            probe = _run_own_cell(client, nb, PROBE.format(modules=book_modules()), timeout)
            missing_here = _probe_result(probe)
            deadline = time.monotonic() + total_timeout  # the student's cells' time, from here
            for i in code:
                left = deadline - time.monotonic()
                if left < 1:
                    over_total = i
                    break
                client.timeout = int(min(timeout, left))
                if _run_cell(client, nb.cells[i], i, client.timeout):
                    timed_out.add(i)
                done.add(i)
            # the grader's own check: each checker the notebook calls, on the function it passes
            checkers = _known_checkers()[0] or {}
            for k, (name, (i, expr)) in enumerate(calls.items()):
                if i not in done or i in timed_out or name not in checkers or not expr:
                    continue
                base = os.path.join(secret, f"{nonce}-{k}")
                cell = _run_own_cell(client, nb, GRADER_CELL.format(checker=name, expr=expr, path=base, nonce=nonce),
                                     timeout)
                verdicts[name] = judge_recording(name, base, nonce) if cell is not None else "timed out"
    except DeadKernelError:
        died = next((i for i in code if i not in done), None)
    except Exception as exc:  # the kernel did not start, or nbclient failed: report, go on to the next notebook
        shutil.rmtree(secret, ignore_errors=True)
        return NotebookResult(path.name, f"could not run ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
                              _checkers(nb, code, done, timed_out, None, calls, verdicts),
                              time.perf_counter() - start)
    shutil.rmtree(secret, ignore_errors=True)

    executed = ""
    if out_dir is not None:
        target = Path(out_dir) / "executed" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(target))
        executed = str(target.relative_to(out_dir))
    errors = [i for i in sorted(done - timed_out) if _error(nb.cells[i]) is not None]
    needed = {m.group(1).split(".")[0] for i in errors if (m := MISSING.match(str(_error(nb.cells[i]).get("evalue"))))}
    if died is not None:
        status = f"kernel died at cell {died + 1}"
    elif over_total is not None:
        status = f"total time limit ({total_timeout} s) used up before cell {over_total + 1}"
    elif timed_out:
        status = "timed out at cell " + ", ".join(str(i + 1) for i in sorted(timed_out)) + f" (limit {timeout} s)"
    elif errors:
        e = _error(nb.cells[errors[0]])
        status = f"{len(errors)} cell(s) raised, first at cell {errors[0] + 1}: {e.get('ename')}: {e.get('evalue')}"
    else:
        status = "ok"
    if client.output_cut is not None:
        status += f"; output cut at cell {client.output_cut + 1} (over {max_output:,} bytes)"
    missing = tuple(m for m in missing_here if m in needed)
    if missing:  # the teacher's environment, not the student: say so before anything else
        status = f"not gradable here: the grading environment lacks {', '.join(missing)}; {status}"
    return NotebookResult(path.name, status, _checkers(nb, code, done, timed_out, died, calls, verdicts),
                          round(time.perf_counter() - start, 1), executed, missing)


def _known_checkers() -> tuple[dict | None, str]:
    """The checkers this process can run, or None and why not (a grading environment without torch)."""
    try:
        from .exercises import CHECKERS
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return CHECKERS, ""


def _client_class():
    """nbclient's NotebookClient, keeping at most `output_limit` bytes of a notebook's outputs."""
    import nbformat
    from nbclient import NotebookClient

    class Client(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            if msg["msg_type"] != "error":  # errors always pass: they say why a cell failed
                self.output_bytes += len(json.dumps(msg.get("content", {}), default=str))
                if self.output_bytes > self.output_limit:
                    if self.output_cut is None:
                        self.output_cut = cell_index
                        outs.append(nbformat.v4.new_output("stream", name="stderr", text=(
                            f"[the grader dropped the output from here on: over {self.output_limit:,} bytes]\n")))
                    return None
            return super().output(outs, msg, display_id, cell_index)

    return Client


def _run_cell(client, cell, index: int, limit: int) -> bool:
    """Execute one cell; True when it ran over `limit` and was interrupted."""
    # a kernel that ignores the interrupt is shut down, which ends this notebook
    watchdog = threading.Timer(2 * limit + 10, _kill, (client,))
    watchdog.start()
    t0 = time.perf_counter()
    try:
        client.execute_cell(cell, index)
    finally:
        watchdog.cancel()
    return time.perf_counter() - t0 >= limit and _error(cell) is not None


def _run_own_cell(client, nb, source: str, limit: int):
    """Run a cell of the grader's, appended for the time it runs (the student's numbering stays);
    the cell, or None when it ran over `limit`."""
    import nbformat

    cell = nbformat.v4.new_code_cell(source)
    nb.cells.append(cell)
    try:
        client.timeout = limit
        over = _run_cell(client, cell, len(nb.cells) - 1, limit)
    finally:
        nb.cells.pop()
    return None if over else cell


def _probe_result(cell) -> list[str]:
    for line in _cell_text(cell).splitlines() if cell is not None else []:
        if line.startswith("nanogptoss-probe: "):
            return json.loads(line.split(": ", 1)[1].replace("'", '"'))
    return []


def _kill(client) -> None:
    process = getattr(getattr(client.km, "provisioner", None), "process", None)
    if process is not None:
        process.kill()


def _checkers(nb, code, done, timed_out, died, calls=None, verdicts=None) -> dict:
    """One result per checker the notebook calls: the grader's own verdict where its cell ran, else
    what happened to that cell. What the notebook printed is never a verdict."""
    calls = _calls(nb, code) if calls is None else calls
    verdicts = verdicts or {}
    checkers, why = _known_checkers()
    results = {}
    for name, (i, expr) in calls.items():  # in the order of their first call
        cell = nb.cells[i]
        error = _error(cell)
        if i in timed_out:
            results[name] = CheckerResult(name, TIMED_OUT, i + 1, f"cell {i + 1} ran over the time limit "
                                                                   f"({_interrupted_line(cell)})")
        elif i not in done:
            why = f"the kernel died at cell {died + 1}" if died is not None else "the notebook stopped before it"
            results[name] = CheckerResult(name, NOT_REACHED, i + 1, why)
        elif error is not None and name not in _lines(_cell_text(cell)):  # it raised before the checker ran
            results[name] = CheckerResult(name, ERROR, i + 1, f"cell {i + 1} raised {error.get('ename')}: "
                                                               f"{error.get('evalue')}")
        elif checkers is None:
            results[name] = CheckerResult(name, NO_RESULT, i + 1, f"the grader cannot check it: importing "
                                                                   f"nanogptoss.book.exercises failed here ({why})")
        elif name not in checkers:
            results[name] = CheckerResult(name, NO_RESULT, i + 1, f"{name} is not a checker of "
                                                                   "nanogptoss.book.exercises")
        elif not expr:
            results[name] = CheckerResult(name, NO_RESULT, i + 1, f"the grader could not tell which function "
                                                                   f"cell {i + 1} passes to {name}")
        elif verdicts.get(name) == "timed out":
            results[name] = CheckerResult(name, TIMED_OUT, i + 1, f"the grader's own call of {name}({expr}) ran "
                                                                   "over the time limit")
        elif verdicts.get(name) is None:
            results[name] = CheckerResult(name, NO_RESULT, i + 1, f"the grader's own call of {name}({expr}) left "
                                                                   "no valid record")
        else:
            passed, message = verdicts[name]
            results[name] = CheckerResult(name, PASSED if passed else FAILED, i + 1, message)
    return results


def _grade_one(args):
    return grade_notebook(*args[:-1], **args[-1])


def grade_folder(folder, out: str | Path | None = None, timeout: int = 120, kernel_name: str = "python3",
                 jobs: int = 1, threads: int = 1, total_timeout: int = TOTAL_TIMEOUT,
                 max_output: int = MAX_OUTPUT) -> list[NotebookResult]:
    """Grade every *.ipynb in `folder` (not recursive) into the folder `out` (default FOLDER/graded).

    Each notebook runs in its own working folder `out`/work/NAME (so two submissions of the
    same chapter never share the files they write), `jobs` at a time, `threads` threads each,
    `timeout` seconds per cell, `total_timeout` for all its cells, `max_output` bytes of output kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; give the folder that holds the students' .ipynb files")
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        raise ValueError(f"no .ipynb files in {folder}")
    if timeout < 1 or jobs < 1 or threads < 1 or total_timeout < 1 or max_output < 1:
        raise ValueError("--timeout, --total-timeout, --max-output, --jobs and --threads must be at least 1")
    out = folder / "graded" if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for path in notebooks:
        work = out / "work" / path.stem
        shutil.rmtree(work, ignore_errors=True)
        tasks.append((path, out, timeout, kernel_name, threads, work,
                      {"total_timeout": total_timeout, "max_output": max_output}))
    print(f"grading {len(notebooks)} notebook(s), {jobs} at a time, {timeout} s per cell ...", flush=True)
    if jobs == 1:
        results = []
        for task in tasks:
            results.append(_grade_one(task))
            _progress(results[-1])
    else:
        # spawn, not fork: a child forked from a process whose torch thread pools have run can
        # hang for ever in its first torch call (seen in CI), and the grader's checks use torch
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = []
            for r in pool.map(_grade_one, tasks):
                results.append(r)
                _progress(r)
    write_summary(results, out)
    if (line := environment_line(results)):
        print(line, flush=True)
    return results


def environment_line(results: list[NotebookResult]) -> str:
    """One line for the teacher when the grading environment lacks a module the submissions needed."""
    missing = sorted({m for r in results for m in r.missing})
    if not missing:
        return ""
    return (f"The grading environment lacks {', '.join(missing)} (imported by the chapters), so the submissions "
            f"that need it fail through no fault of the students: install it where the kernel runs "
            f"(`{INSTALL}`) and grade again.")


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

    md = ["# Grades", ""] + ([f"**{line}**", ""] if (line := environment_line(results)) else [])
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    md += ["", "An empty entry: the notebook does not call that checker. Each student's checkers in full:"]
    for r in results:
        md += ["", f"## {r.notebook}", "", f"{r.status}; {r.passed}/{len(r.checks)} passed in {r.seconds:.0f} s"
               + (f"; executed notebook: `{r.executed}`" if r.executed else ""), ""]
        md += [f"- **{c.checker}**: {c.result}" + (f" (cell {c.cell})" if c.cell else "") + f": {esc(c.message)}"
               for c in r.checks.values()] or ["- no checker found in this notebook"]
    (out / "grades.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / 'grades.md'}, grades.csv, results.csv and the executed notebooks in {out / 'executed'}")
