"""The teacher's grader on planted submissions: one passing, one failing (with an error in the
middle), one timing out, one forging its grade; per student and per checker: passed / failed
with the reason / error / timed out at cell N / not reached, with the executed notebooks kept;
the kernel's clean environment, the grader's limits and its one line about a missing module."""

import csv
import os

import pytest

from nanogptoss.book import exercises as ex
from nanogptoss.book import cli
from nanogptoss.book import grading

HEADER = "import torch\nfrom nanogptoss.book.exercises import check_swiglu, check_router"
SWIGLU = ("def my_swiglu(x, alpha, limit):\n"
          "    g, u = x[..., ::2].clamp(max=limit), x[..., 1::2].clamp(-limit, limit)\n"
          "    return g * torch.sigmoid(alpha * g) * (u + 1)")
ROUTER = "def my_router(z, k):\n    v, i = z.topk(k, -1)\n    return v.softmax(-1), i"
# what a student could do in her own kernel to look as if she passed
FORGERY = """\
import sys, torch
import nanogptoss.book.exercises as ex
torch.allclose = lambda *args, **kwargs: True  # every comparison in this kernel agrees
ex._tensor_problem = lambda *args, **kwargs: None  # and the checker sees no problem
fake = lambda fn, seed=0: print("PASS: check_rmsnorm: all 6 cases match nanogptoss.RMSNorm")
ex.check_rmsnorm = fake
check_rmsnorm = fake
print("PASS: check_rmsnorm: all 6 cases match nanogptoss.RMSNorm")"""
LIMIT = 60


def write_notebook(path, *sources):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    write_notebook(folder / "alice.ipynb", HEADER, SWIGLU, "check_swiglu(my_swiglu)", ROUTER,
                   "check_router(my_router)", "import torch\nprint('threads', torch.get_num_threads())")
    write_notebook(folder / "bob.ipynb", HEADER,
                   "def my_swiglu(x, alpha, limit):\n    g, u = x.chunk(2, -1)\n"
                   "    return g * torch.sigmoid(alpha * g) * (u + 1)",
                   "check_swiglu(my_swiglu)",
                   "check_router(my_router)")  # never defined: the cell raises NameError
    write_notebook(folder / "carol.ipynb", HEADER, SWIGLU, "import time\ntime.sleep(600)\ncheck_swiglu(my_swiglu)",
                   ROUTER, "check_router(my_router)")
    # mallory's functions are wrong; she tries to pass anyway by every means a notebook has
    write_notebook(folder / "mallory.ipynb",
                   "import torch\nfrom nanogptoss.book.exercises import check_rmsnorm",
                   "def my_rmsnorm(x, weight, eps):\n    return x",
                   FORGERY,
                   "check_rmsnorm(my_rmsnorm)",
                   "print('PASS: check_swiglu: all 9 cases match nanogptoss.swiglu')",  # never called
                   "import os\nprint('secret:', os.environ.get('NANOGPTOSS_GRADER_SECRET'))")
    (folder / "notes.txt").write_text("not a notebook")
    os.environ["NANOGPTOSS_GRADER_SECRET"] = "sk-teacher"  # as a teacher's API key would be
    try:  # 60 s a cell: torch imports slowly on a busy machine
        results = grading.grade_folder(folder, timeout=LIMIT, jobs=2)
    finally:
        del os.environ["NANOGPTOSS_GRADER_SECRET"]
    return folder, {r.notebook: r for r in results}


def test_one_result_per_student_and_checker(graded):
    _, by_name = graded
    assert list(by_name) == ["alice.ipynb", "bob.ipynb", "carol.ipynb", "mallory.ipynb"]
    alice, bob, carol, _ = by_name.values()
    assert alice.status == "ok" and alice.passed == 2
    assert [c.result for c in alice.checks.values()] == ["passed", "passed"]

    assert bob.status.startswith("1 cell(s) raised, first at cell 4: NameError")
    swiglu, router = bob.checks["check_swiglu"], bob.checks["check_router"]
    assert swiglu.result == "failed" and swiglu.cell == 3
    assert "Hint: gate and up are interleaved" in swiglu.message  # the whole message, hint included
    assert router.result == "error" and router.cell == 4 and "NameError" in router.message

    assert carol.status == f"timed out at cell 3 (limit {LIMIT} s)"
    assert carol.checks["check_swiglu"].result == "timed out" and carol.checks["check_swiglu"].cell == 3
    assert "time.sleep(600)" in carol.checks["check_swiglu"].message
    assert carol.checks["check_router"].result == "passed"  # the notebook goes on after the interrupted cell


def test_grades_are_written_with_the_executed_notebooks(graded):
    import nbformat

    folder, _ = graded
    out = folder / "graded"
    with open(out / "grades.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["notebook"] for r in rows] == ["alice.ipynb", "bob.ipynb", "carol.ipynb", "mallory.ipynb"]
    assert [r["passed"] for r in rows] == ["2/2", "0/2", "1/2", "0/1"]
    assert [r["check_swiglu"] for r in rows] == ["PASS", "FAIL", "timed out at cell 3", ""]
    assert [r["check_router"] for r in rows] == ["PASS", "error at cell 4", "PASS", ""]
    with open(out / "results.csv") as fh:
        long = list(csv.DictReader(fh))
    assert len(long) == 7 and any("Hint: gate and up are interleaved" in r["message"] for r in long)
    md = (out / "grades.md").read_text()
    assert "| notebook | status | passed | seconds | check_swiglu | check_router | check_rmsnorm |" in md
    assert "## bob.ipynb" in md and "Hint: gate and up are interleaved" in md
    executed = nbformat.read(str(out / "executed" / "alice.ipynb"), as_version=4)
    printed = [o.get("text", "") for c in executed.cells for o in c.get("outputs", [])]
    assert any(p.startswith("PASS: check_swiglu") for p in printed)
    assert "threads 1\n" in printed  # one torch thread per notebook
    # a checker cell shows its line and nothing else: no stray True
    check_cell = executed.cells[2]
    assert [o["output_type"] for o in check_cell.outputs] == ["stream"]


def test_a_printed_pass_or_a_replaced_checker_does_not_pass(graded):
    folder, by_name = graded
    mallory = by_name["mallory.ipynb"]
    rmsnorm = mallory.checks["check_rmsnorm"]
    assert rmsnorm.result == "failed" and rmsnorm.cell == 4
    # the clean checker's own message about her own function's output
    assert rmsnorm.message.startswith("case x (4, 8)") and "max abs error" in rmsnorm.message
    assert "check_swiglu" not in mallory.checks  # printing its line is not calling it
    assert mallory.status == "ok"


def test_the_kernel_gets_no_secret_of_the_grader(graded):
    import nbformat

    folder, _ = graded
    executed = nbformat.read(str(folder / "graded" / "executed" / "mallory.ipynb"), as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "secret: None\n"
    assert len(executed.cells) == 6  # the grader's own cells are not left in the student's notebook
    assert grading._kernel_env(1).keys() <= set(grading.KERNEL_ENV) | set(grading.THREAD_VARS) | {"MPLBACKEND"}


def test_total_time_output_size_and_a_missing_module_of_the_environment(tmp_path, monkeypatch, capsys):
    # the kernel lacks a module the chapters import (here a made-up one, standing for torch)
    monkeypatch.setattr(grading, "book_modules", lambda: ["json", "nanogptoss_missing_dependency"])
    write_notebook(tmp_path / "dave.ipynb",
                   "import nanogptoss_missing_dependency",  # the environment's fault
                   "import a_module_of_the_students_own",  # the student's
                   "print('x' * 50_000)",
                   "import time\ntime.sleep(4)",
                   "time.sleep(60)",
                   "print('never')")
    (result,) = grading.grade_folder(tmp_path, timeout=30, total_timeout=6, max_output=20_000)
    assert result.missing == ("nanogptoss_missing_dependency",)
    assert "used up before cell 5" in result.status or "used up before cell 6" in result.status, result.status
    assert result.status.startswith("not gradable here: the grading environment lacks "
                                    "nanogptoss_missing_dependency; total time limit (6 s) used up before cell ")
    assert result.status.endswith("; output cut at cell 3 (over 20,000 bytes)")
    line = ("The grading environment lacks nanogptoss_missing_dependency (imported by the chapters), so the "
            "submissions that need it fail through no fault of the students: install it where the kernel runs "
            '(`pip install "nanogptoss[book]"`) and grade again.')
    md = (tmp_path / "graded" / "grades.md").read_text().splitlines()
    assert md[:3] == ["# Grades", "", f"**{line}**"]
    assert line in capsys.readouterr().out.splitlines()
    import nbformat

    cells = nbformat.read(str(tmp_path / "graded" / "executed" / "dave.ipynb"), as_version=4).cells
    assert "a_module_of_the_students_own" not in md[2]
    kept = "".join(o.get("text", "") for o in cells[2].outputs)
    assert len(kept) < 20_000 and "the grader dropped the output from here on" in kept
    assert cells[5].outputs == []  # not run: the total time was used up


def test_a_checker_never_reached_is_reported(tmp_path):
    import nbformat
    from nbclient.exceptions import DeadKernelError  # noqa: F401  (the grader's dependency)

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in ("x = 1", "check_rope(f)", "check_top_p(g)")]
    done = {0}
    results = grading._checkers(nb, [0, 1, 2], done, set(), died=1)  # checker results from the sources
    assert [(r.checker, r.result, r.cell) for r in results.values()] == [
        ("check_rope", "not reached", 2), ("check_top_p", "not reached", 3)]
    assert "the kernel died at cell 2" in results["check_rope"].message


def test_a_grader_without_torch_says_why_it_cannot_check(monkeypatch):
    import nbformat

    monkeypatch.setattr(grading, "_known_checkers", lambda: (None, "ModuleNotFoundError: No module named 'torch'"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("check_rope(my_rope)")]
    (result,) = grading._checkers(nb, [0], {0}, set(), None).values()
    assert result.result == "no result"
    assert result.message == ("the grader cannot check it: importing nanogptoss.book.exercises failed here "
                              "(ModuleNotFoundError: No module named 'torch')")


def test_calls_are_found_but_not_definitions_imports_or_comments():
    source = ("from nanogptoss.book.exercises import check_rope\ndef check_mine(fn):\n    pass\n"
              "# check_top_p(x)\ncheck_rope(my_rope)\nok = check_swiglu(f)")
    assert grading.CALL.findall(source) == ["check_rope", "check_swiglu"]


def test_parse_results_keeps_the_last_line_per_checker():
    text = "PASS: check_rope: ok\nnoise\nFAIL: check_swiglu: x\n  PASS: check_swiglu: fixed\nFAIL: other\n"
    assert grading.parse_results(text) == {"check_rope": "PASS", "check_swiglu": "PASS"}


def test_grader_rejects_bad_folders_and_settings(tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path)]) == 2
    assert "no .ipynb files" in capsys.readouterr().err
    assert cli.main(["grade", str(tmp_path / "missing")]) == 2
    write_notebook(tmp_path / "a.ipynb", "1")
    assert cli.main(["grade", str(tmp_path), "--timeout", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_an_unreadable_notebook_is_reported(tmp_path):
    (tmp_path / "broken.ipynb").write_text("{ not json")
    r = grading.grade_notebook(tmp_path / "broken.ipynb")
    assert r.status.startswith("unreadable notebook") and r.checks == {}
