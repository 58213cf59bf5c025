"""What a pip install ships: every subpackage, the tokenizers, and the book's published results
that chapter 13 reads (book/results, shipped as nanogptoss.results)."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nanogptoss").rglob("__init__.py")}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == found | {"nanogptoss.results"}, f"add {found - listed} to pyproject.toml's packages"


def test_the_book_extra_holds_what_the_chapters_import():
    book = " ".join(PYPROJECT["project"]["optional-dependencies"]["book"])
    for name in ("datasets", "matplotlib", "ipywidgets", "transformers"):
        assert name in book
    assert not any(d.startswith("torch") for d in PYPROJECT["project"]["optional-dependencies"]["book"])


def test_the_wheel_ships_the_results_chapter_13_reads(tmp_path):
    import shutil

    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "runs", "logs")
    for part in ("nanogptoss", "book/results"):
        shutil.copytree(ROOT / part, source / part, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "wheel"), str(source)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "wheel").glob("nanogptoss-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    published = sorted(p.relative_to(ROOT / "book" / "results").as_posix()
                       for p in (ROOT / "book" / "results").glob("*/*") if p.suffix in (".md", ".png", ".json", ".safetensors"))
    assert published and all(f"nanogptoss/results/{p}" in names for p in published)
    # installed where no repository is around, the loader finds them in the package
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from nanogptoss.book.results import published_results as p; r = p('cpu'); print(r, sorted(x.name for x in r.glob('*.md')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, cwd=tmp_path).stdout
    assert out.startswith(str(site / "nanogptoss" / "results" / "cpu")) and "grid.md" in out, out


def test_the_grade_extra_brings_what_the_chapters_import():
    """A teacher's grader runs whole chapters: `pip install nanogptoss[grade]` must bring the book extra."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras["book"]) <= set(extras["grade"]), f"add {set(extras['book']) - set(extras['grade'])} to grade"
    for name in ("nbformat", "nbclient", "ipykernel"):
        assert any(d.startswith(name) for d in extras["grade"])


def requirement_closure(requirements: list[str]) -> set[str]:
    """The distributions `requirements` bring, transitively, as installed here (extras' markers left out)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found, todo = set(), [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        found.add(name)
        for sub in metadata.requires(req.name) or []:
            sub = Requirement(sub)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return found


def chapter_imports(path: Path) -> set[str]:
    """The top-level modules a chapter's code cells import, the Colab install cell included."""
    import ast
    import json

    modules = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "\n".join(line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_module_a_chapter_imports_comes_with_the_book_extra():
    """What Colab has after the first cell: the library, its book extra, and what they depend on
    (plus the Jupyter runtime, which is there already). myst-nb, for one, is not."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    project = PYPROJECT["project"]
    brought = requirement_closure(project["dependencies"] + project["optional-dependencies"]["book"]
                                  + ["ipykernel"])  # Colab's own kernel
    owners = metadata.packages_distributions()
    missing = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for module in chapter_imports(path) - set(sys.stdlib_module_names) - {"nanogptoss", "google"}:
            dists = {canonicalize_name(d) for d in owners.get(module, [])}
            if not dists & brought:
                missing.setdefault(path.name, []).append(f"{module} ({', '.join(sorted(dists)) or 'not installed'})")
    assert not missing, f"chapters import what nanogptoss[book] does not bring: {missing}"


def test_the_closure_sees_a_module_outside_the_book_extra():
    """The check above can fail: myst-nb, which the site build has, is not in the book extra's closure."""
    project = PYPROJECT["project"]
    brought = requirement_closure(project["dependencies"] + project["optional-dependencies"]["book"])
    assert "myst-nb" not in brought and {"torch", "transformers", "matplotlib", "regex"} <= brought


def test_requirements_txt_holds_the_package_and_its_book_and_grade_extras():
    """`make test` (a fresh clone) installs requirements.txt only: it must hold what the library,
    the chapters and the grader need, with the same lower bounds as pyproject.toml."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def parse(lines):
        return {canonicalize_name(r.name): r.specifier for r in map(Requirement, lines)}

    listed = parse(line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                   if line.split("#")[0].strip())
    project = PYPROJECT["project"]
    wanted = parse(project["dependencies"] + project["optional-dependencies"]["book"]
                   + project["optional-dependencies"]["grade"])
    assert not set(wanted) - set(listed), f"requirements.txt lacks {sorted(set(wanted) - set(listed))}"
    differ = {name: (str(spec), str(listed[name])) for name, spec in wanted.items() if spec != listed[name]}
    assert not differ, f"pyproject.toml and requirements.txt disagree: {differ}"
