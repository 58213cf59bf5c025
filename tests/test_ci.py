"""The CI stage that runs the book where readers run it (.ci/colab_check.sh): the pieces that can be
checked without building its environments. The stage itself runs in .ci/run."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nanogptoss.book.page import unfold

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


colab_run, teacher_check = load("colab_run"), load("teacher_check")


def test_ci_runs_the_readers_stages():
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^stage colab make colab-check$", run, re.M), run
    assert re.search(r"^stage teacher make teacher-check$", run, re.M), run
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^colab-check:\n\t.*\.ci/colab_check\.sh colab$", make, re.M)
    assert re.search(r"^teacher-check:\n\t.*\.ci/colab_check\.sh teacher$", make, re.M)
    script = (ROOT / ".ci" / "colab_check.sh").read_text()
    assert 'pip" install -q --no-compile "$SRC[book]" "$TORCH_PIN"' in script  # not editable, torch pinned alongside
    installs = [line for line in script.splitlines() if re.search(r"\bpip\"? install", line)]
    assert installs and not any(re.search(r" (-e|--editable)\b", line) for line in installs), installs
    assert "myst" not in " ".join(installs)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_the_runner_finds_each_chapters_install_cell(path):
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    assert colab_run.install_cell(nb, path.name) == 0


def test_the_runner_refuses_a_chapter_without_its_install_cell():
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import torch"), nbformat.v4.new_code_cell("x = 1")]
    with pytest.raises(SystemExit, match="expected exactly one Colab install cell"):
        colab_run.install_cell(nb, "x.ipynb")
    nb.cells[1].metadata["tags"] = ["colab-install"]  # tagged, but not first
    with pytest.raises(SystemExit, match=r"tagged cells: \[1\]"):
        colab_run.install_cell(nb, "x.ipynb")


def test_each_fallback_the_runner_watches_for_is_printed_somewhere():
    """A marker nobody prints any more would make the check silently weaker."""
    sources = [p.read_text() for p in (ROOT / "nanogptoss").rglob("*.py")] + [p.read_text() for p in CHAPTERS]
    for marker in colab_run.FALLBACKS:
        assert any(marker in s for s in sources), f"nothing prints {marker!r}: update .ci/colab_run.py"


def run_notebook(tmp_path, *sources, timeout=60):
    import nbformat

    nb = nbformat.v4.new_notebook()
    install = nbformat.v4.new_code_cell('import sys\nif "google.colab" in sys.modules:\n    raise SystemExit("ran")')
    install.metadata["tags"] = ["colab-install", "remove-cell"]
    nb.cells = [install] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_demo.ipynb"
    nbformat.write(nb, str(path))
    return colab_run.run_chapter(path, timeout=timeout, kernel="python3")


def test_the_runner_runs_a_chapter_alone_and_names_the_failing_cell(tmp_path):
    (tmp_path / "beside.txt").write_text("a file next to the notebook")
    assert run_notebook(tmp_path, "import os\nprint(sorted(os.listdir('.')))\nassert os.listdir('.') == ['99_demo.ipynb']") is None
    why = run_notebook(tmp_path, "x = 1", "open('beside.txt').read()")
    assert why.startswith("cell 2 (\"open('beside.txt').read()\"): CellExecutionError") and "FileNotFoundError" in why
    why = run_notebook(tmp_path, "x = 1", "import time\ntime.sleep(60)", "y = 2", timeout=5)
    assert why.startswith("cell 2 ('import time'): CellTimeoutError"), why
    why = run_notebook(tmp_path, "print('NOTE: TinyStories is not available here, so ...')")
    assert why == "cell 1 ran on a fallback: 'NOTE: TinyStories is not available here, so ...'"


INSTRUCTOR = (ROOT / "book" / "instructor.md").read_text()


def test_the_teachers_environment_is_made_by_the_pages_own_commands():
    commands = teacher_check.setup_commands(INSTRUCTOR, "/src/nanogptoss", "torch==2.13.0")
    assert '"/src/nanogptoss[grade]" "torch==2.13.0"' in commands
    assert "git+" not in commands and "python3 -m venv" in commands and "bin/activate" in commands
    # the page installs from the address the chapters' Colab cell uses
    first_cell = json.loads(CHAPTERS[0].read_text())["cells"][0]
    assert teacher_check.REPO_URL in "".join(first_cell["source"])


def test_the_teacher_check_refuses_a_page_without_the_install(capsys):
    with pytest.raises(SystemExit):
        teacher_check.setup_commands(INSTRUCTOR.replace("[grade]", "[book]"), "/src", "torch==2.13.0")
    assert "must install" in capsys.readouterr().err


def test_submissions_fill_the_handouts_stub(tmp_path):
    from nanogptoss.book import handout

    chapters = tmp_path / "chapters"
    chapters.mkdir()
    for number in teacher_check.PLANTED:
        source = next((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
        (chapters / source.name).write_text(source.read_text())
    handout.strip_folder([chapters], tmp_path / "handouts")
    teacher_check.write_submissions(chapters, tmp_path / "handouts", tmp_path / "subs")
    for number, (checker, wrong, _) in teacher_check.PLANTED.items():
        name, solution = teacher_check.exercise(next(chapters.glob(f"{number}_*")), checker)
        right = json.loads((tmp_path / "subs" / f"right-{number}.ipynb").read_text())
        bad = json.loads((tmp_path / "subs" / f"wrong-{number}.ipynb").read_text())
        sources = ["".join(c["source"]) for c in right["cells"]]
        assert solution in sources and not any("# your code here" in s and f"def {name}(" in s for s in sources)
        assert wrong.format(name=name) in ["".join(c["source"]) for c in bad["cells"]]


def test_the_planted_mistakes_fail_with_their_hint_and_the_solutions_pass(capsys):
    """What `verify` expects of the grader holds for the checkers themselves."""
    import torch  # noqa: F401  (the submissions' code uses it)

    from nanogptoss.book import exercises as ex

    for number, (checker, wrong, hint) in teacher_check.PLANTED.items():
        name, solution = teacher_check.exercise(next((ROOT / "notebooks").glob(f"{number}_*")), checker)
        for code, passes in ((solution, True), (wrong.format(name=name), False)):
            namespace = {"torch": torch}
            exec(code, namespace)
            assert bool(ex.CHECKERS[checker](namespace[name])) is passes
            out = capsys.readouterr().out
            assert passes or f"Hint: {hint}" in unfold(out), out


def report(rows, sections):
    header = "| notebook | status | passed | seconds | check_rmsnorm | check_swiglu |"
    lines = ["# Grades", "", header, "|---|---|---|---|---|---|"] + rows + [""] + sections
    return "\n".join(lines) + "\n"


GOOD_ROWS = ["| right-02.ipynb | ok | 1/1 | 9.0 | PASS |  |", "| right-07.ipynb | ok | 1/1 | 9.0 |  | PASS |",
             "| wrong-02.ipynb | ok | 0/1 | 9.0 | FAIL |  |", "| wrong-07.ipynb | ok | 0/1 | 9.0 |  | FAIL |"]
GOOD_SECTIONS = ["## wrong-02.ipynb", "", "- **check_rmsnorm**: failed (cell 22): case x: bad. Hint: eps goes inside "
                 "the square root: ...", "", "## wrong-07.ipynb", "",
                 "- **check_swiglu**: failed (cell 26): case y. Hint: gate and up are interleaved: ..."]


def test_verify_reads_the_report(tmp_path, capsys):
    (tmp_path / "grades.md").write_text(report(GOOD_ROWS, GOOD_SECTIONS))
    teacher_check.verify(tmp_path)
    assert "says PASS for the 2 right submissions" in capsys.readouterr().out
    # the case: a correct function graded FAIL because the environment lacks a module
    broken = [GOOD_ROWS[0].replace("| ok | 1/1 | 9.0 | PASS", "| 1 cell(s) raised | 0/1 | 9.0 | FAIL")] + GOOD_ROWS[1:]
    (tmp_path / "grades.md").write_text(report(broken, GOOD_SECTIONS))
    with pytest.raises(SystemExit):
        teacher_check.verify(tmp_path)
    assert "right-02.ipynb: expected status ok and check_rmsnorm PASS" in capsys.readouterr().err
    # a FAIL without its reason
    (tmp_path / "grades.md").write_text(report(GOOD_ROWS, [s.replace("Hint: gate", "gate") for s in GOOD_SECTIONS]))
    with pytest.raises(SystemExit):
        teacher_check.verify(tmp_path)
    assert "wrong-07.ipynb: the report must give the reason" in capsys.readouterr().err


def test_the_ci_scripts_parse():
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "colab_check.sh")], check=True)
    subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], check=True)
    for name in ("colab_run", "teacher_check"):
        subprocess.run([sys.executable, "-m", "py_compile", str(ROOT / ".ci" / f"{name}.py")], check=True)
