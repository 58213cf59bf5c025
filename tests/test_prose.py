"""Claims of the book's prose that a test can hold against the code and the table of contents."""

import json
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def markdown(path: Path) -> str:
    """A page's prose: a .md file, or a notebook's markdown cells."""
    if path.suffix != ".ipynb":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def toc_parts() -> list[list[int]]:
    """The chapter numbers of each part of _toc.yml that holds chapters, in order."""
    parts, current = [], None
    for line in (ROOT / "_toc.yml").read_text().splitlines():
        if line.strip().startswith("- caption:"):
            current = []
            parts.append(current)
        m = re.match(r"\s*- file: notebooks/(\d+)_", line)
        if m:
            current.append(int(m.group(1)))
    return [p for p in parts if p]


def test_the_intro_lists_every_chapter_as_the_toc_groups_them():
    section = markdown(ROOT / "book" / "intro.md").split("## What you will build", 1)[1].split("\n## ", 1)[0]
    listed = [(int(a), int(b or a)) for a, b in re.findall(r"\*\*Chapters? (\d+)(?:–(\d+))?", section)]
    expected = [(p[0], p[-1]) for p in toc_parts()]
    assert all(p == list(range(p[0], p[-1] + 1)) for p in toc_parts()), "a part of _toc.yml skips a chapter"
    assert listed == expected, f"book/intro.md lists chapters {listed}; _toc.yml's parts hold {expected}"


def test_the_intro_does_not_deny_the_mxfp4_chapter():
    intro = " ".join(markdown(ROOT / "book" / "intro.md").split())
    loads_mxfp4 = [p.name for p in CHAPTERS if any(
        c["cell_type"] == "code" and "from nanogptoss.weights import mxfp4" in "".join(c["source"])
        for c in json.loads(p.read_text())["cells"])]
    assert loads_mxfp4  # chapter 13 loads the published MXFP4 checkpoint
    assert "unquantized weights only" not in intro, f"{loads_mxfp4} work with MXFP4 weights"
    number = int(loads_mxfp4[0][:2])
    assert f"chapter {number} loads the published checkpoint" in intro


PREFIX_PAGES = [ROOT / "README.md", ROOT / "notebooks" / "00_setup_and_data.ipynb",
                ROOT / "nanogptoss" / "data" / "tokenizers" / "README.md"]


@pytest.fixture(scope="module")
def prefixes():
    """For gpt2-4k and gpt2-8k: (ids, tokens kept from GPT-2's ranks, single bytes among them, merges)."""
    from nanogptoss.data.tokenizer import get_tokenizer

    found = {}
    for name in ("gpt2-4k", "gpt2-8k"):
        ranks = get_tokenizer(name)._mergeable_ranks
        singles = sum(len(token) == 1 for token in ranks)
        found[name] = (get_tokenizer(name).n_vocab, len(ranks), singles, len(ranks) - singles)
    return found


def number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.parametrize("page", PREFIX_PAGES, ids=[str(p.relative_to(ROOT)) for p in PREFIX_PAGES])
def test_the_gpt2_prefixes_are_described_as_the_code_builds_them(page, prefixes):
    """gpt2-4k keeps GPT-2's first 4,095 tokens, 256 of them single bytes: 3,839 merges, not 4,095."""
    text = " ".join(markdown(page).split())
    kept = {v[1] for v in prefixes.values()}
    merges = {v[3] for v in prefixes.values()}
    claims = [m.groups() for m in re.finditer(r"first\** ([\d,]+)(?: or ([\d,]+))? (tokens|merges)", text)
              if re.search(r"GPT-2|gpt2", text[max(0, m.start() - 40):m.end() + 40])]
    assert claims, f"{page.name} no longer describes the gpt2 prefixes: update PREFIX_PAGES"
    for a, b, kind in claims:
        for n in filter(None, (a, b)):
            assert number(n) in (kept if kind == "tokens" else merges), (
                f"{page.name}: 'first {n} {kind}', but the prefixes keep {sorted(kept)} tokens, "
                f"of which {sorted(merges)} are merges")
    parts = re.findall(r"([\d,]+) (?:single )?bytes,? (?:and |then )?(?:its |the )?(?:first )?([\d,]+)(?: or ([\d,]+))? merges", text)
    assert parts, f"{page.name}: say how many of the kept tokens are bytes and how many merges"
    singles = {v[2] for v in prefixes.values()}
    for n_bytes, *counts in parts:
        assert number(n_bytes) in singles, f"{page.name}: '{n_bytes} bytes', but the prefixes keep {singles}"
        assert all(number(n) in merges for n in counts if n), f"{page.name}: merges {counts}, computed {merges}"


def test_the_conventions_page_describes_the_solutions_the_chapters_have():
    page = (ROOT / "book" / "how-to-use.md").read_text()
    tags = {t for p in CHAPTERS for c in json.loads(p.read_text())["cells"] for t in c["metadata"].get("tags", [])}
    solutions = [c for p in CHAPTERS for c in json.loads(p.read_text())["cells"]
                 if "solution" in c["metadata"].get("tags", [])]
    assert solutions and all(c["cell_type"] == "markdown" for c in solutions), "a solution is a code cell"
    assert all("".join(c["source"]).startswith('<details class="solution">') for c in solutions)
    assert '<details class="solution">' in page and "tagged `solution`" in page
    assert "hide-input" in tags or "hide-input" not in page, "how-to-use.md describes hide-input solution cells"


@pytest.mark.parametrize("page", CHAPTERS + sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.name)
def test_bf16_is_said_to_store_7_mantissa_bits(page):
    import torch

    stored = round(-math.log2(torch.finfo(torch.bfloat16).eps))  # eps = 2**-(stored bits): 7
    for m in re.finditer(r"(\d+) bits of mantissa", markdown(page)):
        before = markdown(page)[max(0, m.start() - 80):m.start()]
        if "bf16" in before or "bfloat16" in before:
            assert int(m.group(1)) == stored, f"{page.name}: bf16 stores {stored} bits of mantissa: ...{before}{m.group(0)}"
