"""The explorers on the built site, as a reader without a kernel or a network meets them.

    make book book-test      (or: .venv/bin/python -m pytest -q book/tests/test_explorers.py)

Each chapter's page is opened from disk (file://) with Chromium's network switched off;
the test moves every control, checks that the picture changes, and compares what the page
computed (its `data-result`, and the cells of the drawn mask) with the library's answer
for the same settings (nanogptoss.book.widgets, which uses attention_mask, Router,
load_balancing_loss and RotaryEmbedding). No request may leave the disk, and the console
stays free of errors. Screenshots go to _build/screenshots/explorer_*.png.
"""

from __future__ import annotations

import json

import pytest
import torch
from selenium.webdriver.common.keys import Keys

from nanogptoss.book.widgets import AttentionMaskExplorer, RopeExplorer, RouterExplorer
# `browser`: the same Chromium set-up as test_site.py's (a fixture, one instance for this module)
from test_site import HTML, SHOTS, browser, severe_console_messages, wait_for  # noqa: F401


@pytest.fixture(scope="module")
def offline(browser):
    if not (HTML / "index.html").exists():
        pytest.fail(f"{HTML} has no built site: run `make book` first")
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions",
                            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    return browser


def open_explorer(driver, page: str, name: str):
    driver.get_log("browser")  # start from an empty console
    driver.get((HTML / f"{page}.html").as_uri())
    wait_for(driver, f"document.querySelector('[data-explorer=\"{name}\"]')?.dataset.result",
             timeout=30, what=f"the {name} explorer to draw")
    return f'[data-explorer="{name}"]'


def result(driver, root: str) -> dict:
    return json.loads(driver.execute_script(f"return document.querySelector('{root}').dataset.result"))


def picture(driver, root: str) -> str:
    return driver.execute_script(f"return Array.from(document.querySelectorAll('{root} svg')).map(s => s.outerHTML).join('')")


def set_control(driver, root: str, name: str, value) -> None:
    """A slider moved or a box (un)ticked: the value set, then the event the browser sends."""
    control = driver.find_element("css selector", f"{root} [data-control={name}]")
    if control.get_attribute("type") == "checkbox":
        if control.is_selected() != bool(value):
            control.click()
    else:
        driver.execute_script("arguments[0].value = arguments[1];"
                              "arguments[0].dispatchEvent(new Event('input', {bubbles: true}))", control, str(value))


def saved_state(driver, name: str) -> dict:
    """The explorer's model as the notebook saved it (the inputs the page starts from)."""
    states = driver.execute_script(
        "return Array.from(document.querySelectorAll('script[type=\"application/vnd.jupyter.widget-state+json\"]'))"
        ".map(s => s.textContent)")
    for text in states:
        for model in json.loads(text)["state"].values():
            if model["state"].get("explorer") == name:
                return model["state"]
    pytest.fail(f"no saved {name} explorer in the page's widget state")


def no_requests_off_disk(driver) -> None:
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(("file:", "blob:", "data:")) for u in urls), \
        [u for u in urls if not u.startswith(("file:", "blob:", "data:"))]
    errors = severe_console_messages(driver)
    assert not errors, f"{driver.current_url}: console errors:\n" + "\n".join(errors)


def check_mask(driver, root: str, settings: dict) -> None:
    expected = AttentionMaskExplorer(**settings)
    got = result(driver, root)
    assert torch.equal(torch.tensor(got["mask"], dtype=torch.bool), expected.mask), settings
    assert got["keys_per_query"] == expected.keys_per_query.tolist(), settings
    assert got["receptive_field"] == {p: f.tolist() for p, f in expected.receptive_field.items()}, settings
    # what is drawn: one cell per allowed (query, key), the sink's in the last column
    drawn = driver.execute_script(f"return Array.from(document.querySelectorAll('{root} svg.mask rect[data-t]'))"
                                  ".map(r => [Number(r.dataset.t), Number(r.dataset.u)])")
    assert sorted(map(tuple, drawn)) == sorted(map(tuple, expected.mask.nonzero().tolist())), settings


MASK_STEPS = [  # each applied on top of the previous, as a reader would
    dict(seq_len=24), dict(window=1), dict(window=5), dict(window=40), dict(window=24), dict(window=6, n_layers=1),
    dict(n_layers=5), dict(sinks=True), dict(sliding=False), dict(causal=False), dict(sliding=True),
    dict(causal=True, seq_len=2), dict(seq_len=64, window=64, n_layers=12), dict(sinks=False, window=3),
]


@pytest.mark.parametrize("page", ["notebooks/05_sliding_window", "notebooks/06_attention_sinks"])
def test_attention_mask_explorer_is_live_offline(offline, page):
    root = open_explorer(offline, page, "attention_mask")
    names = ("seq_len", "window", "n_layers", "sinks", "causal", "sliding")
    settings = {name: saved_state(offline, "attention_mask")[name] for name in names}
    check_mask(offline, root, settings)  # the saved state, as drawn on arrival
    for step in MASK_STEPS:
        before = picture(offline, root)
        for name, value in step.items():
            set_control(offline, root, name, value)
        changed = {k: v for k, v in step.items() if settings[k] != v}
        settings.update(step)
        if changed:
            assert picture(offline, root) != before, f"{page}: setting {changed} did not redraw"
        check_mask(offline, root, settings)
    # a keyboard, too: the arrow key moves the window slider by one
    slider = offline.find_element("css selector", f"{root} [data-control=window]")
    slider.send_keys(Keys.ARROW_RIGHT)
    settings["window"] += 1
    check_mask(offline, root, settings)
    offline.execute_script("arguments[0].scrollIntoView()", offline.find_element("css selector", root))
    offline.find_element("css selector", root).screenshot(str(SHOTS / f"explorer_{page.split('/')[-1]}.png"))
    no_requests_off_disk(offline)


def move(driver, root: str, step: dict, settings: dict, expected) -> None:
    """Set the controls of `step` on the page and the same settings on `expected`; a step that
    changes something must change the drawing."""
    before = picture(driver, root)
    for name, value in step.items():
        set_control(driver, root, name, value)
    if step:
        assert picture(driver, root) != before, f"setting {step} did not redraw"
    settings.update(step)
    for name, value in settings.items():
        setattr(expected, name, value)


def test_router_explorer_is_live_offline(offline):
    root = open_explorer(offline, "notebooks/08_router", "router")
    saved = saved_state(offline, "router")
    expected = RouterExplorer(num_tokens=len(saved["logits"]), num_experts=len(saved["logits"][0]))
    expected.logits = saved["logits"]
    settings = {name: saved[name] for name in ("k", "temperature", "skew")}
    for step in [{}, dict(k=1), dict(k=3), dict(temperature=0.2), dict(temperature=4), dict(skew=8),
                 dict(k=len(saved["logits"][0])), dict(skew=0, k=2, temperature=1)]:
        move(offline, root, step, settings, expected)
        got = result(offline, root)
        assert got["indices"] == expected.indices.tolist(), settings
        torch.testing.assert_close(torch.tensor(got["weights"], dtype=torch.float64), expected.weights, rtol=1e-6, atol=1e-9)
        assert got["counts"] == expected.counts.tolist(), settings
        assert got["loss"] == pytest.approx(expected.loss, rel=1e-5), settings
        drawn = offline.execute_script(f"return Array.from(document.querySelectorAll('{root} rect[data-expert]'))"
                                       ".filter(r => Number(r.dataset.weight) > 0).length")
        assert drawn == len(got["indices"]) * settings["k"], settings  # every chosen expert drawn
    offline.find_element("css selector", root).screenshot(str(SHOTS / "explorer_08_router.png"))
    no_requests_off_disk(offline)


def test_rope_explorer_is_live_offline(offline):
    root = open_explorer(offline, "notebooks/03_rope", "rope")
    saved = saved_state(offline, "rope")
    expected = RopeExplorer(head_dim=saved["head_dim"])
    expected.q, expected.k = saved["q"], saved["k"]
    settings = {name: saved[name] for name in ("m", "n", "pair", "factor")}
    for step in [{}, dict(m=40), dict(n=30), dict(m=1040, n=1030), dict(pair=31), dict(factor=32), dict(m=0, n=2048),
                 dict(factor=1, pair=0)]:
        move(offline, root, step, settings, expected)
        got = result(offline, root)
        torch.testing.assert_close(torch.tensor(got["inv_freq"]), expected.inv_freq, rtol=1e-6, atol=0)
        assert got["score"] == pytest.approx(expected.score, rel=1e-4, abs=1e-3), settings
        torch.testing.assert_close(torch.tensor(got["curve"]), expected.curve, rtol=1e-4, atol=1e-3)
    offline.find_element("css selector", root).screenshot(str(SHOTS / "explorer_03_rope.png"))
    no_requests_off_disk(offline)
