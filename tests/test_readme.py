"""The README's result tables are the committed results, never an older copy of them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "book" / "results" / "cpu"
# the README's real-data results: the main runs, and the 10-minute check of the 2-layer variant
REAL_DATA = [RESULTS, ROOT / "book" / "results" / "cpu-2-layers"]


def readme_results() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- results:start -->(.*)<!-- results:end -->", text, re.S)
    assert match, "README.md: the results block (<!-- results:start --> ... <!-- results:end -->) is missing"
    return match.group(1)


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]


def test_every_table_row_in_the_readme_is_a_committed_result():
    committed = {row for folder in REAL_DATA for path in folder.glob("*.md") for row in table_rows(path.read_text())}
    rows = table_rows(readme_results())
    assert rows, "the README's results block has no tables"
    stale = [row for row in rows if row not in committed]
    assert not stale, f"README rows not in {[f.name for f in REAL_DATA]}/*.md (rerun the command, copy its table): {stale[:2]}"


def test_the_readme_gives_the_command_and_the_data_of_each_committed_table():
    block = readme_results()
    for path in sorted(p for folder in REAL_DATA for p in folder.glob("*.md")):
        text = path.read_text()
        command = re.search(r"Command: `([^`]+)`", text)
        assert command, f"{path.name} does not record its command"
        assert command.group(1) in block, f"README: the command of {path.name} ({command.group(1)}) is missing"
        assert "TinyStories" in text.splitlines()[0], f"{path.name}: not a run on TinyStories"


def test_the_images_the_readme_shows_exist():
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).is_file(), f"README shows {target}, which does not exist"


def test_the_readme_shows_the_cpu_benchmark_tables_as_measured():
    """The CPU levers and the memory check are shown whole, as the scripts wrote them."""
    text = (ROOT / "README.md").read_text()
    readme_rows = set(table_rows(text))
    for name in ("cpu_levers.md",):
        measured = (ROOT / "benchmarks" / "results" / "cpu" / name).read_text()
        missing = [row for row in table_rows(measured) if row not in readme_rows]
        assert not missing, f"README: rows of benchmarks/results/cpu/{name} missing or changed: {missing[:2]}"
        command = re.search(r"Command: `([^`]+)`", measured).group(1)
        assert command in text, f"README: the command of {name} ({command}) is missing"
    log = (ROOT / "benchmarks" / "results" / "cpu" / "bench_cpu_memory.log").read_text()
    assert set(table_rows(log)) <= readme_rows, "README: the memory table is not bench_cpu_memory.log's"
