"""Chapter 12's generation explorer on the built site: the shipped models writing in the browser.

    make book && .venv/bin/python -m pytest -q book/tests/test_generation.py

No kernel, and no network but the page's own local server (the explorer fetches the weights
relative to the page, which a file:// page may not do): Chromium gets a proxy that does not
exist and no DNS, so any request off 127.0.0.1 fails, and the test checks that none was made.
At temperature 0 the explorer must write exactly what PyTorch's `generate(..., temperature=0)`
writes for the same prompt ids; clicking a token must show attention rows that sum with their
sink to 1, with no weight outside a banded layer's window, and the router's choice PyTorch
makes. Screenshots of the explorer before and after the click go to _build/screenshots/.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_site import HTML, SHOTS, severe_console_messages, site, start_chromium, wait_for  # noqa: F401

from nanogptoss import pretrained
from nanogptoss.book.widgets import browser_files
from nanogptoss.data.tokenizer import get_tokenizer

PAGE = "notebooks/12_generation"
# longer than the window (32 tokens), so the banded layers' rows have keys outside it
PROMPT = ("Once upon a time, there was a little girl named Lily. She loved to play in the park "
          "with her friends. One day, she saw a big red ball under a tall tree near the pond.")
NEW_TOKENS = 60


@pytest.fixture(scope="module")
def offline():
    # a proxy nobody listens on takes every request Chromium does not send straight to the
    # loopback address, and no host name resolves: the page's own server is all there is
    driver = start_chromium("--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(site, offline):
    for name, path in browser_files().items():
        served = HTML / "_static" / "nanogptoss" / name
        assert served.is_file() and served.read_bytes() == path.read_bytes(), \
            f"{served} is missing or not the package's {path.name}: rebuild the book (make book)"
    offline.get(f"{site}/{PAGE}.html")
    wait_for(offline, "document.querySelectorAll('[data-explorer=\"generation\"]').length === 2",
             timeout=60, what="the two generation explorers to draw")
    return offline


def explorer(driver, index: int):
    return driver.find_elements("css selector", '[data-explorer="generation"]')[index]


def result(root) -> dict:
    return json.loads(root.get_attribute("data-result"))


def set_value(driver, root, name: str, value, event: str = "input") -> None:
    control = root.find_element("css selector", f"[data-control={name}]")
    driver.execute_script("arguments[0].value = arguments[1];"
                          "arguments[0].dispatchEvent(new Event(arguments[2], {bubbles: true}))",
                          control, str(value), event)


def generate(driver, index: int, model: str, temperature=0) -> dict:
    root = explorer(driver, index)
    set_value(driver, root, "prompt", PROMPT)
    set_value(driver, root, "pretrained", model, "change")
    set_value(driver, root, "temperature", temperature)
    set_value(driver, root, "max_new_tokens", NEW_TOKENS)
    root.find_element("css selector", "[data-control=generate]").click()
    wait_for(driver, f"['done', 'error'].includes(JSON.parse(document.querySelectorAll('[data-explorer=\"generation\"]')"
                     f"[{index}].dataset.result).status)", timeout=120, what=f"{model} to finish writing")
    got = result(root)
    assert got["status"] == "done", got.get("error")
    return got


def fits(driver, root) -> None:
    """Nothing scrolls sideways: the explorer, each of its pictures, and the page."""
    wide = driver.execute_script("""
        const root = arguments[0], box = root.getBoundingClientRect(), found = [];
        if (root.scrollWidth > root.clientWidth + 1) found.push(`explorer ${root.scrollWidth} > ${root.clientWidth}`);
        for (const s of root.querySelectorAll('svg, div, textarea'))
            if (s.getBoundingClientRect().right > box.right + 1) found.push(`${s.tagName} ends past the explorer`);
        const doc = document.documentElement;
        if (doc.scrollWidth > doc.clientWidth + 1) found.push(`page ${doc.scrollWidth} > ${doc.clientWidth}`);
        return found;""", root)
    assert not wide, wide


@pytest.mark.parametrize("index,model", [(0, "tinystories-gptoss"), (1, "tinystories-gpt2")])
def test_explorer_writes_what_pytorch_writes(page, index, model):
    got = generate(page, index, model)
    tok = get_tokenizer("tinystories-4k")
    prompt_ids = tok.encode_ordinary(PROMPT)
    assert got["model"] == model and got["prompt_ids"] == prompt_ids  # the JS BPE, as tiktoken
    reference = pretrained(model)
    expected = reference.generate(torch.tensor([prompt_ids]), NEW_TOKENS, temperature=0)[0, len(prompt_ids):].tolist()
    assert got["generated_ids"] == expected
    assert got["text"] == tok.decode(prompt_ids + expected)
    root = explorer(page, index)
    shown = page.execute_script("return arguments[0].querySelectorAll('.story .token').length", root)
    assert shown == NEW_TOKENS
    page.execute_script("arguments[0].scrollIntoView()", root)
    fits(page, root)
    root.screenshot(str(SHOTS / f"generation_{model}.png"))

    # the last token: its query (the token before it) sees more keys than a banded layer's window
    chosen = NEW_TOKENS - 1
    root.find_element("css selector", f".story .token[data-index='{chosen}']").click()
    wait_for(page, f"JSON.parse(document.querySelectorAll('[data-explorer=\"generation\"]')[{index}].dataset.result)"
                   f".selected?.index === {chosen}", what="the clicked token's attention")
    selected = result(root)["selected"]
    config = reference.config
    q = len(prompt_ids) + chosen - 1
    assert selected["id"] == expected[chosen] and selected["query_position"] == q
    assert len(selected["layers"]) == config.num_hidden_layers
    for kind, layer in zip(config.layer_types, selected["layers"]):
        assert layer["keys"] == list(range(q + 1))
        assert len(layer["heads"]) == config.num_attention_heads
        for head in layer["heads"]:
            assert sum(head["probs"]) + head["sink"] == pytest.approx(1.0, abs=1e-4)
            assert (head["sink"] > 0) == config.attn_sinks
            if kind == "sliding_attention":
                assert q + 1 > config.sliding_window
                assert all(p == 0 for p in head["probs"][: q + 1 - config.sliding_window])
    # the experts shown are the ones PyTorch's router picks at that position
    ids = torch.tensor([(prompt_ids + expected)[: q + 1]])
    with torch.no_grad():
        reference(ids)
    moe = list(reference.moe_blocks()) if config.is_moe else []
    for block, layer in zip(moe, selected["layers"]):
        assert layer["experts"] == block.last_routing.indices[q].tolist()
        assert layer["weights"] == pytest.approx(block.last_routing.weights[q].tolist(), abs=1e-4)
    # and drawn: a picture per layer, the window's edge on each banded one, the experts of each MoE layer
    drawn = page.execute_script("""const r = arguments[0];
        return {layers: r.querySelectorAll('svg.layer').length, edges: r.querySelectorAll('svg.layer .window-edge').length,
                routers: r.querySelectorAll('svg.router').length};""", root)
    assert drawn == {"layers": config.num_hidden_layers, "edges": config.layer_types.count("sliding_attention"),
                     "routers": len(moe)}
    fits(page, root)
    root.screenshot(str(SHOTS / f"generation_{model}_token.png"))


def test_nothing_left_the_local_server(page):
    # after both explorers wrote: every request went to the page's own server, nothing failed
    origin = page.execute_script("return location.origin")
    urls = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith((origin, "blob:", "data:")) for u in urls), \
        [u for u in urls if not u.startswith((origin, "blob:", "data:"))]
    assert not severe_console_messages(page)
    weight = page.execute_script("""
        const nav = performance.getEntriesByType('navigation')[0], res = performance.getEntriesByType('resource');
        return [nav.decodedBodySize, res.reduce((a, e) => a + e.decodedBodySize, 0)];""")
    print(f"{PAGE}: HTML {weight[0]:,} bytes, HTML + everything it loaded {sum(weight):,} bytes")
