"""The teacher's grader on planted submissions: one passing, one failing (with an error in the
middle), one timing out; per student and per checker: passed / failed with the reason /
error / timed out at cell N / not reached, with the executed notebooks kept."""

import csv

import pytest

from nanogptoss.book import exercises as ex
from nanogptoss.book import grading

HEADER = "import torch\nfrom nanogptoss.book.exercises import check_swiglu, check_router"
SWIGLU = ("def my_swiglu(x, alpha, limit):\n"
          "    g, u = x[..., ::2].clamp(max=limit), x[..., 1::2].clamp(-limit, limit)\n"
          "    return g * torch.sigmoid(alpha * g) * (u + 1)")
ROUTER = "def my_router(z, k):\n    v, i = z.topk(k, -1)\n    return v.softmax(-1), i"


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
    write_notebook(folder / "carol.ipynb", HEADER, SWIGLU, "import time\ntime.sleep(60)\ncheck_swiglu(my_swiglu)",
                   ROUTER, "check_router(my_router)")
    (folder / "notes.txt").write_text("not a notebook")
    results = ex.grade_folder(folder, timeout=15, jobs=2)  # 15 s: torch imports slowly on a busy machine
    return folder, {r.notebook: r for r in results}


def test_one_result_per_student_and_checker(graded):
    _, by_name = graded
    assert list(by_name) == ["alice.ipynb", "bob.ipynb", "carol.ipynb"]
    alice, bob, carol = by_name.values()
    assert alice.status == "ok" and alice.passed == 2
    assert [c.result for c in alice.checks.values()] == ["passed", "passed"]

    assert bob.status.startswith("1 cell(s) raised, first at cell 4: NameError")
    swiglu, router = bob.checks["check_swiglu"], bob.checks["check_router"]
    assert swiglu.result == "failed" and swiglu.cell == 3
    assert "Hint: gate and up are interleaved" in swiglu.message  # the whole message, hint included
    assert router.result == "error" and router.cell == 4 and "NameError" in router.message

    assert carol.status == "timed out at cell 3 (limit 15 s)"
    assert carol.checks["check_swiglu"].result == "timed out" and carol.checks["check_swiglu"].cell == 3
    assert "time.sleep(60)" in carol.checks["check_swiglu"].message
    assert carol.checks["check_router"].result == "passed"  # the notebook goes on after the interrupted cell


def test_grades_are_written_with_the_executed_notebooks(graded):
    import nbformat

    folder, _ = graded
    out = folder / "graded"
    with open(out / "grades.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["notebook"] for r in rows] == ["alice.ipynb", "bob.ipynb", "carol.ipynb"]
    assert [r["passed"] for r in rows] == ["2/2", "0/2", "1/2"]
    assert [r["check_swiglu"] for r in rows] == ["PASS", "FAIL", "timed out at cell 3"]
    assert [r["check_router"] for r in rows] == ["PASS", "error at cell 4", "PASS"]
    with open(out / "results.csv") as fh:
        long = list(csv.DictReader(fh))
    assert len(long) == 6 and any("Hint: gate and up are interleaved" in r["message"] for r in long)
    md = (out / "grades.md").read_text()
    assert "| notebook | status | passed | seconds | check_swiglu | check_router |" in md
    assert "## bob.ipynb" in md and "Hint: gate and up are interleaved" in md
    executed = nbformat.read(str(out / "executed" / "alice.ipynb"), as_version=4)
    printed = [o.get("text", "") for c in executed.cells for o in c.get("outputs", [])]
    assert any(p.startswith("PASS: check_swiglu") for p in printed)
    assert "threads 1\n" in printed  # one torch thread per notebook
    # a checker cell shows its line and nothing else: no stray True
    check_cell = executed.cells[2]
    assert [o["output_type"] for o in check_cell.outputs] == ["stream"]


def test_a_checker_never_reached_is_reported(tmp_path):
    import nbformat
    from nbclient.exceptions import DeadKernelError  # noqa: F401  (the grader's dependency)

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in ("x = 1", "check_rope(f)", "check_top_p(g)")]
    done = {0}
    results = grading._checkers(nb, [0, 1, 2], done, set(), died=1)
    assert [(r.checker, r.result, r.cell) for r in results.values()] == [
        ("check_rope", "not reached", 2), ("check_top_p", "not reached", 3)]
    assert "the kernel died at cell 2" in results["check_rope"].message


def test_calls_are_found_but_not_definitions_imports_or_comments():
    source = ("from nanogptoss.book.exercises import check_rope\ndef check_mine(fn):\n    pass\n"
              "# check_top_p(x)\ncheck_rope(my_rope)\nok = check_swiglu(f)")
    assert grading.CALL.findall(source) == ["check_rope", "check_swiglu"]


def test_parse_results_keeps_the_last_line_per_checker():
    text = "PASS: check_rope: ok\nnoise\nFAIL: check_swiglu: x\n  PASS: check_swiglu: fixed\nFAIL: other\n"
    assert grading.parse_results(text) == {"check_rope": "PASS", "check_swiglu": "PASS"}


def test_grader_rejects_bad_folders_and_settings(tmp_path, capsys):
    assert ex.main(["grade", str(tmp_path)]) == 2
    assert "no .ipynb files" in capsys.readouterr().err
    assert ex.main(["grade", str(tmp_path / "missing")]) == 2
    write_notebook(tmp_path / "a.ipynb", "1")
    assert ex.main(["grade", str(tmp_path), "--timeout", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_an_unreadable_notebook_is_reported(tmp_path):
    (tmp_path / "broken.ipynb").write_text("{ not json")
    r = grading.grade_notebook(tmp_path / "broken.ipynb")
    assert r.status.startswith("unreadable notebook") and r.checks == {}
