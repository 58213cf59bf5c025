"""Every chapter page fits a reader's 1280-px window (make book first; the fixtures are test_site's):

* the code column holds the page width the notebooks are formatted to (nanogptoss.book.page.WIDTH),
* no code or output block scrolls sideways,
* no nbval marker shows on the page (they are cell tags),
* a cell's stream output is one box (a kernel's flushed pieces merged by book/_ext/book_site.py),
* answers and solutions are collapsed (and, opened, fit the page like the rest).
"""

from __future__ import annotations

import pytest
from test_site import PAGES, browser, site, wait_for  # noqa: F401  (fixtures)

from nanogptoss.book.page import WIDTH

CHAPTERS = [p for p in PAGES if p.startswith("notebooks/")]


def open_page(browser, site, page: str):
    browser.get(f"{site}/{page}.html")
    wait_for(browser, "document.readyState === 'complete'", what="the page to load")
    assert browser.get_window_size()["width"] == 1280, "the browser window must be 1280 px wide"


def test_the_code_column_holds_the_page_width(site, browser):
    """Characters of the code font that fit in a code block of a chapter, without scrolling."""
    open_page(browser, site, "notebooks/02_rmsnorm")
    fits = browser.execute_script("""
        const pre = document.querySelector('main div.cell_input pre');
        const probe = document.createElement('span');
        probe.textContent = 'x'.repeat(100);
        pre.appendChild(probe);
        const style = getComputedStyle(pre);
        const inner = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        const chars = inner / (probe.getBoundingClientRect().width / 100);
        probe.remove();
        return chars;""")
    print(f"the code column holds {fits:.1f} characters at 1280 px")
    assert fits >= WIDTH, f"the code column holds {fits:.1f} characters, fewer than the page width {WIDTH}"


@pytest.mark.parametrize("page", CHAPTERS)
def test_the_chapter_fits_the_page(site, browser, page):
    open_page(browser, site, page)
    problems = browser.execute_script("""
        const main = document.querySelector('main');
        const found = [];
        for (const d of main.querySelectorAll('details.solution, details.answers')) {
            if (d.open) { found.push('an uncollapsed answer: ' + d.innerText.slice(0, 60)); }
        }
        // code and output blocks that scroll sideways, the collapsed ones opened as a reader would
        main.querySelectorAll('details').forEach(d => { d.open = true; });
        for (const el of main.querySelectorAll('pre, div.cell_output > div, div.cell_output table')) {
            if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
                found.push(`scrolls sideways (${el.scrollWidth} > ${el.clientWidth} px): `
                           + el.innerText.split('\\n').find(l => l.length > 0).slice(0, 90));
            }
        }
        if (/NBVAL_/.test(main.innerText)) {
            found.push('an nbval marker is visible: ' + main.innerText.match(/.{0,40}NBVAL_\\w*/)[0]);
        }
        // one box per stream: consecutive boxes of the same stream are a split output
        for (const out of main.querySelectorAll('div.cell_output')) {
            let run = [], kinds = [];
            for (const child of out.children) {
                const kind = child.classList.contains('stream') ? 'stdout'
                           : child.classList.contains('stderr') ? 'stderr' : null;
                if (kind) { run.push(kind); } else { run = []; }
                const n = run.length;
                if (n >= 3 || (n >= 2 && run[n - 1] === run[n - 2])) {
                    found.push(`an output split into ${n} stream boxes: ` + child.innerText.slice(0, 60));
                    break;
                }
            }
        }
        return found;""")
    assert not problems, f"{page}: " + "\n".join(problems[:8]) + (f"\n... {len(problems)} in all"
                                                                   if len(problems) > 8 else "")
