"""The book's published results (the `compare` tables and plots in book/results/NAME), found
in a checkout of the repository or, after a pip install, in the package (nanogptoss.results)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2] / "book" / "results"


def published_results(name: str = "cpu") -> Path | None:
    """The folder of results `name` ("cpu": the CPU runs of chapter 12), or None if absent."""
    if (REPOSITORY / name).is_dir():
        return REPOSITORY / name
    try:
        shipped = resources.files("nanogptoss.results") / name
    except ModuleNotFoundError:  # a checkout without book/results
        return None
    return Path(str(shipped)) if shipped.is_dir() else None
