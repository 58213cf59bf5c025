"""The book's structure: table of contents, the Colab cell, widget state, exercises, citations.

Fast checks on the committed files only (no notebook is executed here: `make nbval`
runs them, `make book` builds the site, `make book-test` opens it in a browser).
Notebooks are read as JSON so these tests need nothing beyond the library's requirements.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from nanogptoss.book.page import WIDTH as PAGE_WIDTH

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def toc_files() -> list[str]:
    """Every `file:` entry of the toc, the root first, in reading order."""
    files = [TOC["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in TOC.get("parts", []):
        walk(part.get("chapters"))
    walk(TOC.get("chapters"))
    return files


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def source(cell) -> str:
    return text(cell["source"])


def text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def code_cells(nb) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def is_training(path: Path) -> bool:
    return any(fnmatch.fnmatch(path.name, p) for p in CONFIG["execute"]["exclude_patterns"])


def by_name(paths):
    return pytest.mark.parametrize("path", paths, ids=[p.stem for p in paths])


# -- table of contents --------------------------------------------------------------------

def test_there_are_chapters():
    assert len(NOTEBOOKS) >= 7, f"expected the chapter notebooks in notebooks/, found {NOTEBOOKS}"


def test_every_toc_entry_exists():
    for entry in toc_files():
        matches = [ROOT / f"{entry}{suffix}" for suffix in (".md", ".ipynb") if (ROOT / f"{entry}{suffix}").exists()]
        assert len(matches) == 1, f"_toc.yml lists {entry!r}: expected exactly one of {entry}.md / {entry}.ipynb"


def test_every_notebook_and_page_is_in_the_toc():
    listed = set(toc_files())
    for path in NOTEBOOKS + sorted((ROOT / "book").glob("*.md")):
        entry = path.relative_to(ROOT).with_suffix("").as_posix()
        assert entry in listed, f"{entry} is not in _toc.yml: add `- file: {entry}`"


def test_toc_lists_chapters_in_order_without_repeats():
    entries = toc_files()
    assert len(entries) == len(set(entries)), "an entry appears twice in _toc.yml"
    chapters = [e for e in entries if e.startswith("notebooks/")]
    assert chapters == sorted(chapters), "notebooks must appear in _toc.yml in the order of their numbers"
    numbers = [int(Path(c).name.split("_")[0]) for c in chapters]
    assert numbers == list(range(len(numbers))), f"chapter numbers should run 0, 1, 2, ... without gaps: {numbers}"


@by_name(NOTEBOOKS)
def test_notebook_title_matches_its_number(path):
    nb = load(path)
    titles = [source(c) for c in nb["cells"] if c["cell_type"] == "markdown" and source(c).startswith("# ")]
    assert titles, f"{path.name}: no '# N. Title' heading"
    number = int(path.name.split("_")[0])
    assert titles[0].startswith(f"# {number}. "), f"{path.name}: the first heading should start '# {number}. '"


# -- the Colab cell --------------------------------------------------------------------------

def run_first_cell(path: Path, monkeypatch, colab: bool) -> list:
    """Execute the notebook's first cell with subprocess.run recorded instead of run."""
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append(list(args)))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace: dict = {}
    exec(compile(source(code_cells(load(path))[0]), f"{path.name}[0]", "exec"), namespace)
    return calls


@by_name(NOTEBOOKS)
def test_first_cell_installs_from_the_repository_on_colab_only(path, monkeypatch):
    nb = load(path)
    first = nb["cells"][0]
    assert first["cell_type"] == "code", f"{path.name}: the first cell must be the Colab install cell"
    assert "remove-cell" in first["metadata"].get("tags", []), f"{path.name}: tag the Colab cell 'remove-cell'"
    assert not first.get("outputs"), f"{path.name}: the Colab cell prints nothing outside Colab"
    url = CONFIG["repository"]["url"]
    assert f'REPO_URL = "{url}"' in source(first), f"{path.name}: REPO_URL must be _config.yml's repository.url {url}"

    assert run_first_cell(path, monkeypatch, colab=False) == [], f"{path.name}: the first cell ran pip outside Colab"
    calls = run_first_cell(path, monkeypatch, colab=True)
    assert len(calls) == 1, f"{path.name}: on Colab the first cell should run exactly one pip install, ran {calls}"
    args = calls[0]
    assert args[1:4] == ["-m", "pip", "install"], args
    assert f"nanogptoss[book] @ git+{url}" in args, \
        f"{path.name}: installs {args}, not the library with its book extra from git+{url}"
    assert not any(re.match(r"(torch|pytorch)\b", a) for a in args), f"{path.name}: never reinstall torch: {args}"
    assert "--upgrade" not in args and "-U" not in args, f"{path.name}: --upgrade would replace Colab's torch"


def test_launch_buttons_point_at_colab():
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["url"].startswith("https://github.com/")


# -- executed, with the outputs the site shows -------------------------------------------------

@by_name(NOTEBOOKS)
def test_notebook_is_executed_top_to_bottom_without_errors(path):
    cells = code_cells(load(path))[1:]  # the Colab cell may be unexecuted: it is removed from the site
    counts = [c["execution_count"] for c in cells]
    assert all(n is not None for n in counts), (f"{path.name}: unexecuted cells; run "
                                                f"`.venv/bin/python book/run_notebooks.py {path.relative_to(ROOT)}`")
    assert counts == sorted(counts) and len(set(counts)) == len(counts), \
        f"{path.name}: cells were run out of order ({counts}); re-execute from the top"
    for c in cells:
        errors = [o for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"{path.name}: a cell saved an error: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert any(o["output_type"] == "display_data" and "image/png" in o["data"]
               for c in cells for o in c.get("outputs", [])), f"{path.name}: a chapter draws at least one figure"


@by_name(NOTEBOOKS)
def test_widget_state_is_saved_where_widgets_are_shown(path):
    nb = load(path)
    views = [o["data"][WIDGET_VIEW]["model_id"] for c in code_cells(nb) for o in c.get("outputs", [])
             if WIDGET_VIEW in o.get("data", {})]
    # widgets come from nanogptoss.book.widgets, or from ipywidgets directly, or from tqdm.auto's progress bars
    uses_widgets = any(re.search(r"nanogptoss\.widgets|ipywidgets", source(c)) for c in code_cells(nb))
    if not uses_widgets and not views:
        assert WIDGET_STATE not in nb["metadata"].get("widgets", {}), \
            f"{path.name} shows no widget but saved widget state (the site would load the widget manager " \
            "for nothing): re-execute it with book/run_notebooks.py"
        return
    assert views, f"{path.name} builds a widget but shows none; end the cell with the widget"
    state = nb["metadata"].get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    assert state, f"{path.name}: no widget state saved; execute it with book/run_notebooks.py"
    missing = [m for m in views if m not in state]
    assert not missing, f"{path.name}: widget views {missing} have no saved state; re-execute the notebook"


CHECK_TAG = "nbval-check-output"  # nbval's cell tag: with --nbval-lax, the saved output is compared


@by_name(NOTEBOOKS)
def test_deterministic_cells_are_checked_by_nbval(path):
    cells = code_cells(load(path))
    comments = [i for i, c in enumerate(cells) if re.search(r"^\s*#\s*NBVAL_", source(c), re.M)]
    assert not comments, f"{path.name}, code cells {comments}: an nbval comment shows on the page; " \
                         f"tag the cell `{CHECK_TAG}` instead"
    checked = [c for c in cells if CHECK_TAG in c["metadata"].get("tags", [])]
    if is_training(path):
        return  # recorded runs: nothing in them is reproducible on a CPU
    assert len(checked) >= 2, f"{path.name}: tag deterministic cells `{CHECK_TAG}`"
    for c in checked:
        assert c.get("outputs"), f"{path.name}: a checked cell has no saved output to compare with"


def test_training_notebooks_are_excluded_from_execution_and_say_how_they_ran():
    patterns = CONFIG["execute"]["exclude_patterns"]
    assert "*train*.ipynb" in patterns
    for path in NOTEBOOKS:
        if not is_training(path):
            continue
        text = "\n".join(source(c) for c in load(path)["cells"] if c["cell_type"] == "markdown")
        assert re.search(r"device", text, re.I) and "python -m nanogptoss" in text, \
            f"{path.name}: a recorded run must name its device and the command that produced it"


# -- chapter structure --------------------------------------------------------------------------

@by_name(NOTEBOOKS)
def test_chapter_ends_with_exercises(path):
    """An Exercises section; a function to write comes with its check and a collapsed solution.

    "Run all" must not pass the exercise: the check judges the stub (which fails), and the
    worked solution is a collapsed markdown block, never code that redefines the stub's
    name. tests/test_exercises.py runs each solution against its checker."""
    if is_training(path):
        return
    nb = load(path)
    headings = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"
                and re.search(r"^## Exercises", source(c), re.M)]
    assert headings, f"{path.name}: no '## Exercises' section"
    tail = nb["cells"][headings[-1]:]
    stubs = [c for c in tail if c["cell_type"] == "code" and "# your code here" in source(c)]
    if not stubs:
        return  # questions only
    assert not [c for c in tail if c["cell_type"] == "code" and "solution" in c["metadata"].get("tags", [])], \
        f"{path.name}: a worked solution must not be a code cell (Run all would pass the exercise)"
    solutions = [c for c in tail if c["cell_type"] == "markdown" and "solution" in c["metadata"].get("tags", [])]
    assert len(solutions) == len(stubs), f"{path.name}: each exercise needs a collapsed solution tagged 'solution'"
    assert all(source(c).startswith('<details class="solution">') for c in solutions), \
        f"{path.name}: a solution is a <details class=\"solution\"> block, collapsed in Jupyter and on the site"
    checks = [c for c in tail if c["cell_type"] == "code" and re.search(r"^check_\w+\(", source(c), re.M)]
    assert len(checks) == len(stubs), f"{path.name}: each exercise needs a cell that checks the reader's function"
    printed = "".join(text(o.get("text", "")) for c in checks for o in c.get("outputs", []))
    assert "returned None" in printed and "PASS" not in printed, f"{path.name}: the saved checks must judge the stub"
    assert not any(o["output_type"] == "execute_result" for c in checks for o in c.get("outputs", [])), \
        f"{path.name}: a check cell shows only its PASS/FAIL line (no stray True)"


@by_name(NOTEBOOKS)
def test_exercise_checkers_exist(path):
    from nanogptoss.book import exercises

    for c in code_cells(load(path)):
        for name in re.findall(r"from nanogptoss\.book\.exercises import ([\w, ]+)", source(c)):
            for checker in (n.strip() for n in name.split(",")):
                assert callable(getattr(exercises, checker, None)), f"{path.name}: no checker {checker}"


# the chapters that build a module of nanogptoss/model/, and what of it each shows at least
CHAPTER_SOURCES = {
    "02_rmsnorm": ["RMSNorm"], "03_rope": ["apply_rotary_emb"], "04_grouped_query_attention": ["repeat_kv"],
    "05_sliding_window": ["is_visible", "attention_mask"], "06_attention_sinks": ["attention_reference",
                                                                                  "AttentionBlock"],
    "07_swiglu": ["swiglu"], "08_router": ["router"], "09_moe": ["moe_dispatch", "MLPBlock"],
    "12_generation": ["LayerKVCache"],
}


@by_name([p for p in NOTEBOOKS if p.stem in CHAPTER_SOURCES])
def test_module_chapters_show_the_library_source(path):
    """Chapters that build a module read its source from the installed library, never a copy:
    chapter 6 the whole AttentionBlock (its forward is where GQA, RoPE, window, sinks and cache
    meet), chapter 9 the plain MLPBlock with its readable dispatch."""
    shown = " ".join(source(c) for c in code_cells(load(path)) if "inspect.getsource" in source(c))
    for name in CHAPTER_SOURCES[path.stem]:
        assert re.search(rf"getsource\((\w+\.)*{name}\b", shown), f"{path.name}: show {name} with inspect.getsource"


def test_the_chapters_show_readable_modules_not_kernels():
    for path in NOTEBOOKS:
        shown = " ".join(source(c) for c in code_cells(load(path)) if "inspect.getsource" in source(c))
        for fast in ("moe_sorted", "moe_grouped", "attention_sdpa", "attention_flex", "_GatherSlots", "choose_"):
            assert f"getsource({fast}" not in shown, f"{path.name} shows the speed code {fast}"


@by_name(NOTEBOOKS)
def test_data_fallback_is_announced(path):
    text = "".join(source(c) for c in code_cells(load(path)))
    if 'load_texts("tinystories"' not in text and "load_texts('tinystories'" not in text:
        return
    assert "DataUnavailable" in text and re.search(r"synthetic", text, re.I), \
        f"{path.name}: catch DataUnavailable and say (printed) that the chapter falls back to synthetic stories"


# -- site configuration -------------------------------------------------------------------------

def test_vendored_javascript_exists():
    """The site works offline: MathJax and the widget manager come from book/_static."""
    static = ROOT / CONFIG["sphinx"]["config"]["html_static_path"][0]
    assert (static / CONFIG["sphinx"]["config"]["mathjax_path"]).is_file()
    for script in CONFIG["sphinx"]["config"]["nb_ipywidgets_js"]:
        assert not script.startswith("http"), f"{script}: vendor it (book/vendor-js.sh) instead of a CDN"
        assert (static / script).is_file(), f"{script} missing: run bash book/vendor-js.sh"


def test_every_citation_is_in_the_bibliography():
    bib = (ROOT / CONFIG["bibtex_bibfiles"][0]).read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    # ``{cite}`key` `` in double backticks is an example written in code, not a citation
    texts = [re.sub(r"``.*?``", "", p.read_text()) for p in NOTEBOOKS + sorted((ROOT / "book").glob("*.md"))]
    cited = {k.strip() for t in texts for group in re.findall(r"\{cite[pt]?\}`([^`]+)`", t) for k in group.split(",")}
    assert cited, "no citations found"
    assert not cited - keys, f"cited but not in {CONFIG['bibtex_bibfiles'][0]}: {sorted(cited - keys)}"


def test_run_notebooks_skips_training_notebooks_by_default():
    text = (ROOT / "book" / "run_notebooks.py").read_text()
    assert '"train" not in p.name' in text


# -- how the notebooks read on the page ------------------------------------------------------

CODE_WIDTH = PAGE_WIDTH  # characters the site's code box shows without scrolling at 1280 px (78)


@by_name(NOTEBOOKS)
def test_code_fits_the_code_box(path):
    wide = [(i, line) for i, c in enumerate(code_cells(load(path)))
            for line in source(c).splitlines() if len(line) > CODE_WIDTH]
    assert not wide, f"{path.name}: {len(wide)} code lines wider than {CODE_WIDTH}, e.g. {wide[0]}"


def test_notebook_code_is_black_formatted():
    black = subprocess.run([sys.executable, "-m", "black", "--check", "--quiet", "--line-length",
                            str(CODE_WIDTH), *map(str, NOTEBOOKS)], capture_output=True, text=True)
    assert black.returncode == 0, (f"notebooks not formatted: run `python -m black --line-length {CODE_WIDTH} "
                                   "notebooks/`\n" + black.stderr[-2000:])


def printed_lines(cell):
    """The lines a cell prints or returns as plain text (tables and figures are laid out by the page)."""
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            yield from text(out["text"]).splitlines()
        elif out["output_type"] in ("execute_result", "display_data") and \
                set(out["data"]) <= {"text/plain"}:
            yield from text(out["data"]["text/plain"]).splitlines()


@by_name(NOTEBOOKS)
def test_printed_lines_fit_the_output_box(path):
    wide = [(i, line) for i, c in enumerate(code_cells(load(path))) for line in printed_lines(c)
            if len(line) > CODE_WIDTH]
    assert not wide, (f"{path.name}: {len(wide)} printed lines wider than {CODE_WIDTH}, e.g. {wide[0]}; "
                      "fold them (nanogptoss.book.page.fold)")


@by_name(NOTEBOOKS)
def test_each_stream_is_one_box(path):
    for i, cell in enumerate(code_cells(load(path))):
        kinds = [(o["output_type"], o.get("name")) for o in cell.get("outputs", [])]
        split = [a for a, b in zip(kinds, kinds[1:]) if a == b and a[0] == "stream"]
        assert not split, f"{path.name}, code cell {i}: {split[0][1]} split into several boxes " \
                          "(execute with book/run_notebooks.py, which merges them)"
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                assert "\r" not in text(out["text"]).rstrip("\r\n"), \
                    f"{path.name}, code cell {i}: a progress bar's redraws are saved (use book/run_notebooks.py)"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem.startswith(("11_", "12_"))],
                         ids=lambda p: p.stem)
def test_generated_stories_are_wrapped_for_display(path):
    for i, cell in enumerate(code_cells(load(path))):
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                for line in text(out["text"]).splitlines():
                    if "Once upon a time" in line:
                        assert len(line) <= CODE_WIDTH, f"{path.name}, code cell {i}: a story line of {len(line)}"
