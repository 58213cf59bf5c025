"""The explorers: their numbers against brute force written from the definitions, the
widgets driven from Python, and the browser's computation (js/explorers.js, run in Node.js)
against the library for the same settings."""

import itertools
import json
import shutil
import subprocess

import pytest
import torch

from nanogptoss.book.widgets import layer_mask, layer_stack, receptive_field, with_sink_column


def brute_mask(T, window, causal):
    """Key u visible from query t: not in the future (if causal), fewer than W positions away."""
    return torch.tensor([[(u <= t or not causal) and (window is None or abs(t - u) < window)
                          for u in range(T)] for t in range(T)])


def brute_receptive_field(T, window, kinds, causal):
    """Walk the graph down: which inputs does output t depend on, layer by layer (sets, no matrices)."""
    sizes = []
    for t in range(T):
        frontier = {t}
        for kind in reversed(kinds):  # from the top layer down to the inputs
            w = window if kind == "sliding_attention" else None
            frontier = {u for s in frontier for u in range(T)
                        if (u <= s or not causal) and (w is None or abs(s - u) < w)}
        sizes.append(len(frontier))
    return torch.tensor(sizes)


@pytest.mark.parametrize("T,window,causal", [(1, 1, True), (7, 3, True), (7, 3, False), (12, 1, True),
                                             (9, 20, True), (16, 4, False)])
def test_layer_mask_matches_definition(T, window, causal):
    torch.testing.assert_close(layer_mask(T, window, causal), brute_mask(T, window, causal))
    torch.testing.assert_close(layer_mask(T, None, causal), brute_mask(T, None, causal))


def test_sink_column_is_last_and_always_allowed():
    m = with_sink_column(layer_mask(5, 2))
    assert m.shape == (5, 6) and m[:, -1].all()
    torch.testing.assert_close(m[:, :5], layer_mask(5, 2))


def test_layer_stack_starts_sliding_and_alternates():
    S, F = "sliding_attention", "full_attention"
    assert layer_stack(5) == (S, F, S, F, S)
    assert layer_stack(3, "sliding") == (S,) * 3
    with pytest.raises(ValueError):
        layer_stack(2, "striped")


@pytest.mark.parametrize("T,window,n_layers,causal",
                         list(itertools.product([1, 6, 13], [1, 2, 4], [1, 2, 3], [True, False])))
def test_receptive_field_matches_graph_walk(T, window, n_layers, causal):
    for pattern in ("alternating", "sliding", "full"):
        expected = brute_receptive_field(T, window, layer_stack(n_layers, pattern), causal)
        torch.testing.assert_close(receptive_field(T, window, n_layers, pattern, causal), expected)


def test_banded_receptive_field_closed_form():
    """Each causal banded layer reaches W - 1 further back: min(t + 1, N (W - 1) + 1)."""
    T, W = 64, 5
    for N in range(1, 6):
        t = torch.arange(T)
        torch.testing.assert_close(receptive_field(T, W, N, "sliding"),
                                   torch.minimum(t + 1, torch.tensor(N * (W - 1) + 1)))


def test_one_dense_layer_reaches_everything_before():
    """gpt-oss's alternation: from the second layer on, every earlier token can reach every later one."""
    T = 40
    torch.testing.assert_close(receptive_field(T, 4, 2, "alternating"), torch.arange(1, T + 1))


# the widgets themselves: set the controls the way a reader would, read the explorer's numbers
@pytest.fixture
def explorer():
    from nanogptoss.book.widgets import AttentionMaskExplorer
    return AttentionMaskExplorer(seq_len=16, window=4, n_layers=3, sinks=False, causal=True, sliding=True)


def test_explorer_follows_its_controls(explorer):
    torch.testing.assert_close(explorer.mask, brute_mask(16, 4, True))
    explorer.seq_len = 11
    explorer.window = 3
    torch.testing.assert_close(explorer.mask, brute_mask(11, 3, True))
    torch.testing.assert_close(explorer.keys_per_query, brute_mask(11, 3, True).sum(-1))
    assert explorer.keys_per_query.tolist() == [1, 2] + [3] * 9

    explorer.sliding = False  # the dense layer of the pair
    torch.testing.assert_close(explorer.mask, brute_mask(11, None, True))
    assert explorer.keys_per_query.tolist() == list(range(1, 12))

    explorer.causal = False
    torch.testing.assert_close(explorer.mask, brute_mask(11, None, False))


def test_explorer_sink_column(explorer):
    explorer.sinks = True
    assert explorer.mask.shape == (16, 17)
    assert explorer.mask[:, -1].all()
    torch.testing.assert_close(explorer.mask[:, :-1], brute_mask(16, 4, True))
    # the sink is a softmax entry, not a key: the count of keys does not change
    torch.testing.assert_close(explorer.keys_per_query, brute_mask(16, 4, True).sum(-1))


def test_explorer_receptive_fields(explorer):
    for n_layers, window in [(1, 4), (2, 2), (5, 3)]:
        explorer.n_layers = n_layers
        explorer.window = window
        for pattern in ("alternating", "sliding", "full"):
            expected = brute_receptive_field(16, window, layer_stack(n_layers, pattern), True)
            torch.testing.assert_close(explorer.receptive_field[pattern], expected)


def test_explorers_reject_bad_settings_in_one_line(explorer):
    from nanogptoss.book.widgets import RopeExplorer, RouterExplorer
    with pytest.raises(ValueError, match="window must be between 1 and 64, got 0"):
        explorer.window = 0
    with pytest.raises(ValueError, match="k must be between 1 and 8, got 9"):
        RouterExplorer(num_experts=8, k=9)
    with pytest.raises(ValueError, match="pair must be between 0 and 31"):
        RopeExplorer(pair=32)


def test_router_explorer_against_topk_softmax():
    from nanogptoss.book.widgets import RouterExplorer
    router = RouterExplorer(num_tokens=5, num_experts=6, k=3, temperature=0.5, skew=2.0)
    z = torch.tensor(router.logits, dtype=torch.float64)
    z[:, 0] += 2.0
    z = z / 0.5
    top, idx = z.topk(3, dim=-1)
    torch.testing.assert_close(router.indices, idx)
    torch.testing.assert_close(router.weights, top.softmax(-1))
    router.k = 1  # one expert: its weight is always exactly 1
    assert router.weights.eq(1).all()
    router.skew = 50.0  # every token to expert 0: f_0 = P_0 = 1, the loss is E
    assert router.counts.tolist() == [5, 0, 0, 0, 0, 0] and router.loss == pytest.approx(6.0)


def test_rope_explorer_score_depends_on_the_offset_only():
    from nanogptoss.book.widgets import RopeExplorer
    rope = RopeExplorer(m=40, n=10)
    first = rope.score
    rope.m, rope.n = 1030, 1000
    assert rope.score == pytest.approx(first, rel=1e-4)
    assert rope.curve[0] == pytest.approx(float(torch.tensor(rope.q) @ torch.tensor(rope.k)), rel=1e-5)
    plain = rope.inv_freq.clone()
    rope.factor = 32.0  # YaRN: the fastest pair keeps its frequency, the slowest is divided by 32
    assert rope.inv_freq[0] == plain[0] and rope.inv_freq[-1] == pytest.approx(plain[-1] / 32)


# the browser's arithmetic: js/explorers.js's exported functions, run by Node.js on the settings below
def run_js(calls: list[tuple[str, dict]]) -> list[dict]:
    from nanogptoss.book.widgets import EXPLORERS_JS
    node = shutil.which("node")
    if node is None:
        pytest.fail("comparing the explorers' JavaScript with the library needs Node.js (`apt-get install nodejs`)")
    script = (f"import * as js from {json.dumps(EXPLORERS_JS.as_uri())};\n"
              f"const calls = {json.dumps(calls)};\n"
              "console.log(JSON.stringify(calls.map(([fn, arg]) => js[fn](arg))));")
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


MASK_SETTINGS = [dict(seq_len=T, window=W, n_layers=N, sinks=s, causal=c, sliding=sl)
                 for T, W, N in [(1, 1, 1), (2, 1, 3), (9, 1, 2), (16, 4, 3), (12, 12, 2), (10, 30, 4), (33, 5, 7)]
                 for s, c, sl in [(False, True, True), (True, True, True), (True, False, True), (False, True, False)]]


def test_javascript_attention_masks_equal_the_library():
    from nanogptoss.book.widgets import AttentionMaskExplorer
    results = run_js([("attentionMaskResult", s) for s in MASK_SETTINGS])
    for settings, js in zip(MASK_SETTINGS, results):
        py = AttentionMaskExplorer(**settings)
        assert torch.equal(torch.tensor(js["mask"], dtype=torch.bool), py.mask), settings
        assert js["keys_per_query"] == py.keys_per_query.tolist(), settings
        assert js["receptive_field"] == {p: f.tolist() for p, f in py.receptive_field.items()}, settings


ROUTER_SETTINGS = [dict(k=k, temperature=t, skew=s) for k, t, s in
                   [(1, 1.0, 0.0), (2, 1.0, 0.0), (2, 0.3, 1.5), (4, 2.5, 0.0), (8, 1.0, 6.0), (3, 0.1, 8.0)]]


def test_javascript_router_equals_the_library():
    from nanogptoss.book.widgets import RouterExplorer
    explorers = [RouterExplorer(**s) for s in ROUTER_SETTINGS]
    results = run_js([("routerResult", dict(logits=e.logits, bias=[e.skew] + [0] * 7, k=e.k, temperature=e.temperature))
                      for e in explorers])
    for e, js in zip(explorers, results):
        assert js["indices"] == e.indices.tolist()
        torch.testing.assert_close(torch.tensor(js["weights"], dtype=torch.float64), e.weights, rtol=1e-6, atol=1e-9)
        assert js["counts"] == e.counts.tolist()
        assert js["loss"] == pytest.approx(e.loss, rel=1e-5)


ROPE_SETTINGS = [dict(m=m, n=n, pair=p, factor=f) for m, n, p, f in
                 [(0, 0, 0, 1.0), (12, 4, 3, 1.0), (2048, 0, 31, 1.0), (700, 1500, 10, 32.0), (5, 5, 0, 2.0), (1, 0, 17, 64.0)]]


def test_javascript_rope_equals_the_library():
    from nanogptoss.book.widgets import RopeExplorer
    explorers = [RopeExplorer(**s) for s in ROPE_SETTINGS]
    names = ("q", "k", "head_dim", "base", "factor", "context", "m", "n", "pair", "max_offset")
    results = run_js([("ropeResult", {name: getattr(e, name) for name in names}) for e in explorers])
    for e, js in zip(explorers, results):
        torch.testing.assert_close(torch.tensor(js["inv_freq"]), e.inv_freq, rtol=1e-6, atol=0)
        assert js["concentration"] == pytest.approx(e.concentration)
        assert js["score"] == pytest.approx(e.score, rel=1e-4, abs=1e-3)
        assert js["offsets"] == e.offsets
        torch.testing.assert_close(torch.tensor(js["curve"]), e.curve, rtol=1e-4, atol=1e-3)


def test_site_vendors_the_anywidget_frontend_of_the_installed_anywidget():
    """The static site runs the saved widgets with book/_static/vendor/anywidget: it must be the
    front-end release the Python package names (its widgets ask for ~MAJOR.MINOR.*)."""
    import re
    from pathlib import Path

    import anywidget
    vendored = (Path(__file__).resolve().parents[1] / "book/_static/vendor/VERSIONS").read_text()
    version = re.search(r"^anywidget@(\S+)", vendored, re.M).group(1)
    assert version.split(".")[:2] == anywidget.__version__.split(".")[:2], \
        f"the site vendors anywidget {version}, Python has {anywidget.__version__}: set ANYWIDGET_VERSION in book/vendor-js.sh and re-run it"


def test_notebooks_saved_the_current_explorers_module():
    """The site runs the ES module saved in each notebook's widget state: it must be today's
    js/explorers.js, or for the generation explorer today's js/generation.js with model.js and
    bpe.js inlined (one source, never a stale copy), so re-execute a chapter after changing it."""
    from pathlib import Path

    from nanogptoss.book.widgets import EXPLORERS_JS, JS_DIR, inline_module
    modules = {"explorers.js": EXPLORERS_JS.read_text(), "generation.js": inline_module(JS_DIR / "generation.js")}
    saved = {name: 0 for name in modules}
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        state = json.loads(path.read_text())["metadata"].get("widgets", {})
        for model in state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {}).values():
            if model["model_module"] == "anywidget":
                name = "generation.js" if "pretrained" in model["state"] else "explorers.js"
                assert model["state"]["_esm"] == modules[name], \
                    f"{path.name} saved an older js/{name}: python book/run_notebooks.py notebooks/{path.name}"
                saved[name] += 1
    assert saved["explorers.js"] >= 4, f"expected the explorers of chapters 3, 5, 6, 8 in the saved widget state: {saved}"
    assert saved["generation.js"] >= 2, f"expected chapter 12's two generation explorers in the saved state: {saved}"
