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
