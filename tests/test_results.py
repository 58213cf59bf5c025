"""nanogptoss.book.results: the committed comparison results, read back as the runner wrote them."""

import pytest

from nanogptoss.book.results import published_results, read_runs
from nanogptoss.training import compare


@pytest.mark.parametrize("experiment", ["grid", "ladder"])
def test_read_runs_gives_back_the_committed_table(experiment):
    """Averaged by the runner's own summarize, the rows read from the CSV print the very table
    the runner wrote beside it: numbers come back as numbers, every run is there."""
    runs = read_runs("cpu", experiment)
    assert isinstance(runs[0]["seed"], int) and isinstance(runs[0]["val_bpb"], float)
    assert isinstance(runs[0]["label"], str)
    written = (published_results("cpu") / f"{experiment}.md").read_text()
    table = compare.markdown_table(compare.summarize(runs))
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows and all(row in written for row in rows), rows[0]


def test_missing_results_say_how_to_make_them():
    with pytest.raises(FileNotFoundError, match="python -m nanogptoss compare nothing"):
        read_runs("cpu", "nothing")
