"""The attention-mask explorer: its numbers against brute force written from the definitions."""

import itertools

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


# the widget itself: set the controls the way a reader would, read the explorer's numbers
@pytest.fixture
def explorer():
    import ipywidgets  # noqa: F401  (the explorer needs it)
    import matplotlib
    matplotlib.use("Agg")
    from nanogptoss.book.widgets import AttentionMaskExplorer
    return AttentionMaskExplorer(seq_len=16, window=4, n_layers=3, sinks=False, causal=True, sliding=True)


def test_explorer_follows_its_controls(explorer):
    torch.testing.assert_close(explorer.mask, brute_mask(16, 4, True))
    explorer.seq_len.value = 11
    explorer.window.value = 3
    torch.testing.assert_close(explorer.mask, brute_mask(11, 3, True))
    torch.testing.assert_close(explorer.keys_per_query, brute_mask(11, 3, True).sum(-1))
    assert explorer.keys_per_query.tolist() == [1, 2] + [3] * 9

    explorer.sliding.value = False  # the dense layer of the pair
    torch.testing.assert_close(explorer.mask, brute_mask(11, None, True))
    assert explorer.keys_per_query.tolist() == list(range(1, 12))

    explorer.causal.value = False
    torch.testing.assert_close(explorer.mask, brute_mask(11, None, False))


def test_explorer_sink_column(explorer):
    explorer.sinks.value = True
    assert explorer.mask.shape == (16, 17)
    assert explorer.mask[:, -1].all()
    torch.testing.assert_close(explorer.mask[:, :-1], brute_mask(16, 4, True))
    # the sink is a softmax entry, not a key: the count of keys does not change
    torch.testing.assert_close(explorer.keys_per_query, brute_mask(16, 4, True).sum(-1))


def test_explorer_receptive_fields(explorer):
    for n_layers, window in [(1, 4), (2, 2), (5, 3)]:
        explorer.n_layers.value = n_layers
        explorer.window.value = window
        for pattern in ("alternating", "sliding", "full"):
            expected = brute_receptive_field(16, window, layer_stack(n_layers, pattern), True)
            torch.testing.assert_close(explorer.receptive_field[pattern], expected)
    assert explorer.figure is not None
