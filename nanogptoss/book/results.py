"""The book's published results (the `compare` tables and plots in book/results/NAME), found
in a checkout of the repository or, after a pip install, in the package (nanogptoss.results)."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2] / "book" / "results"


def published_results(name: str = "cpu") -> Path | None:
    """The folder of results `name` ("cpu": the CPU runs chapter 13 reads), or None if absent."""
    if (REPOSITORY / name).is_dir():
        return REPOSITORY / name
    try:
        shipped = resources.files("nanogptoss.results") / name
    except ModuleNotFoundError:  # a checkout without book/results
        return None
    return Path(str(shipped)) if shipped.is_dir() else None


def read_runs(name: str, experiment: str) -> list[dict]:
    """The rows of book/results/NAME/EXPERIMENT.csv, one per run, numbers read as numbers
    (so `compare.summarize` can average them as it averaged the runs it wrote)."""
    folder = published_results(name)
    path = folder / f"{experiment}.csv" if folder is not None else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"no published results {name}/{experiment}.csv: make them with "
                                f"python -m nanogptoss compare {experiment} --out book/results/{name}")
    with open(path, newline="") as f:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(f)]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
