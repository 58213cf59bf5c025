"""What cells print renders as it reads in the notebook: markdown tables are tables, math
in the answers is typeset. (make book first; the fixtures are test_site's.)"""

from __future__ import annotations

import pytest
from test_site import browser, site, wait_for  # noqa: F401  (fixtures)


def open_page(browser, site, page: str):
    browser.get(f"{site}/{page}.html")
    wait_for(browser, "document.readyState === 'complete'", what="the page to load")


def output_text(browser) -> str:
    """What the page's code cells printed or displayed (not their source)."""
    text = browser.execute_script(
        "return [...document.querySelectorAll('main .cell_output')].map(e => e.innerText).join('\\n')")
    assert text, f"{browser.current_url}: no cell outputs found (has the theme's markup changed?)"
    return text


def tables(browser) -> list[list[str]]:
    """Each <table> of the page's main content, as the text of its rows."""
    return browser.execute_script("""
        return [...document.querySelectorAll('main table')].map(
            t => [...t.querySelectorAll('tr')].map(r => r.innerText.replace(/\\s+/g, ' ').trim()));""")


def test_the_preset_table_of_chapter_10_is_a_table(site, browser):
    open_page(browser, site, "notebooks/10_assembling_gptoss")
    found = [t for t in tables(browser) if t and t[0].startswith("preset")]
    assert found, "chapter 10's preset table is not rendered as a <table>"
    assert any(row.startswith("cpu-tiny") for row in found[0]) and any(row.startswith("gpt-oss-20b")
                                                                     for row in found[0])
    assert "|---|" not in output_text(browser)


@pytest.mark.parametrize("header, row", [("model val bits/byte", "GPT-OSS 4 heads x 2 layers"),
                                         ("GPT-OSS 4 heads x 2 layers GPT-2 4 heads x 2 layers", "1 Once upon")])
def test_the_comparison_and_the_stories_of_chapter_13_are_tables(site, browser, header, row):
    open_page(browser, site, "notebooks/13_evaluation")
    found = [t for t in tables(browser) if t and t[0].startswith(header)]
    assert found, f"chapter 13: no <table> whose header starts {header!r}"
    assert any(r.startswith(row) for r in found[0][1:]), found[0][:3]


def test_chapter_13_shows_the_committed_real_data_results_as_short_tables(site, browser):
    """The grid, the ladder and the speedrun, each a table of at most five columns that the
    page shows whole (the full tables are in the README and book/results)."""
    open_page(browser, site, "notebooks/13_evaluation")
    assert "|---|" not in output_text(browser), "a markdown table is shown as raw text"
    headers = [t[0] for t in tables(browser) if t]
    for header in ("cell GPT-OSS bits/byte GPT-2 bits/byte", "rung bits/byte change",
                   "model seed bits/byte steps tokens seen"):
        assert any(h.startswith(header) for h in headers), f"chapter 13: no table headed {header!r}"
    wide = browser.execute_script("""
        return [...document.querySelectorAll('main table')]
            .filter(t => t.scrollWidth > t.parentElement.clientWidth + 1).length;""")
    assert not wide, f"chapter 13: {wide} table(s) wider than the page"


def test_math_in_chapter_1_answers_is_typeset_not_a_list(site, browser):
    open_page(browser, site, "notebooks/01_gpt2_baseline")
    wait_for(browser, "window.MathJax && MathJax.startup && MathJax.startup.promise && true", what="MathJax")
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    raw = browser.execute_script("""
        return [...document.querySelectorAll('main li, main p')].map(e => e.innerText)
            .filter(t => t.includes('\\\\cdot'));""")
    assert not raw, f"untypeset TeX in chapter 1: {raw[:2]}"
