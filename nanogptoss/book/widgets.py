"""Interactive figures for the book: the attention-mask explorer.

The explorer draws what `nanogptoss.model.attention.attention_mask` allows: which keys
each query may attend to on a dense or a banded (sliding-window) layer, with the
sink as an extra softmax column, how many keys each query sees, and how far back
information can travel through a stack of layers (the receptive field).

The computations are plain functions (`layer_mask`, `with_sink_column`,
`layer_stack`, `receptive_field`) that need only torch; the widget itself needs
ipywidgets and matplotlib, imported when an explorer is built.
"""

from __future__ import annotations

import torch

from ..config import FULL, SLIDING, alternating_layer_types
from ..model.attention import attention_mask

# stacks of layers: gpt-oss's alternation, or every layer of one type
LAYER_PATTERNS = ("alternating", "sliding", "full")


def layer_mask(seq_len: int, window: int | None = None, causal: bool = True) -> torch.Tensor:
    """The (T, T) boolean mask of one layer over a sequence of `seq_len` tokens.

    `window=None` is a dense layer. The causal mask is exactly the library's
    `attention_mask`; the non-causal one (an encoder, for comparison) is that mask
    together with its mirror image: key u is visible from query t when |t - u| < W.
    """
    pos = torch.arange(seq_len)
    allowed = attention_mask(pos, pos, window)
    if not causal:
        allowed = allowed | allowed.T
    return allowed


def with_sink_column(mask: torch.Tensor) -> torch.Tensor:
    """(T, Tk) -> (T, Tk + 1): the sink is one more softmax entry, always allowed.

    It sits last, where `attention_reference` concatenates the sink logit.
    """
    return torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=torch.bool)], dim=-1)


def layer_stack(n_layers: int, pattern: str = "alternating") -> tuple[str, ...]:
    """Layer types bottom to top (as in `GPTConfig.layer_types`): gpt-oss alternates,
    starting with a sliding-window layer; "sliding" and "full" repeat one type."""
    if pattern not in LAYER_PATTERNS:
        raise ValueError(f"pattern must be one of {LAYER_PATTERNS}, got {pattern!r}")
    if pattern == "alternating":
        return alternating_layer_types(n_layers, sliding_window=1)
    return (SLIDING if pattern == "sliding" else FULL,) * n_layers


def reachability(masks: list[torch.Tensor]) -> torch.Tensor:
    """(T, T) boolean: can input position j influence output position t after these layers?

    One layer moves information from key u to query t when mask[t, u]; the residual
    stream keeps each token's own information (the diagonal is always allowed), so
    reachability through a stack is the boolean product M_N ... M_2 M_1 of the masks.
    """
    T = masks[0].shape[0]
    reach = torch.eye(T, dtype=torch.bool)
    for mask in masks:  # bottom layer first
        reach = (mask.float() @ reach.float()) > 0
    return reach


def receptive_field(seq_len: int, window: int, n_layers: int, pattern: str = "alternating",
                    causal: bool = True) -> torch.Tensor:
    """For each position, the number of input tokens that can reach it through the stack."""
    masks = [layer_mask(seq_len, window if layer_type == SLIDING else None, causal)
             for layer_type in layer_stack(n_layers, pattern)]
    return reachability(masks).sum(-1)


def _require_ipywidgets():
    try:
        import ipywidgets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("The attention-mask explorer needs ipywidgets: pip install ipywidgets "
                          "(it is in requirements-book.txt).") from err
    return ipywidgets


class AttentionMaskExplorer:
    """Sliders and checkboxes around one figure; display it in a notebook.

    Attributes kept in step with the controls, for tests and for reading in code:
    `mask` (T, T, or T, T + 1 with the sink column last), `keys_per_query` (T,: real
    keys only, the sink is not a key), `receptive_field` (a dict of (T,) tensors for
    stacks of N "alternating", all-"sliding" and all-"full" layers).
    """

    def __init__(self, seq_len: int = 32, window: int = 8, n_layers: int = 4, sinks: bool = True,
                 causal: bool = True, sliding: bool = True, max_len: int = 128):
        widgets = _require_ipywidgets()
        style, wide = {"description_width": "initial"}, widgets.Layout(width="300px")
        self.seq_len = widgets.IntSlider(value=seq_len, min=2, max=max_len, description="sequence length T",
                                         style=style, layout=wide, continuous_update=False)
        self.window = widgets.IntSlider(value=window, min=1, max=max_len, description="window W",
                                        style=style, layout=wide, continuous_update=False)
        self.n_layers = widgets.IntSlider(value=n_layers, min=1, max=12, description="layers N",
                                          style=style, layout=wide, continuous_update=False)
        self.sinks = widgets.Checkbox(value=sinks, description="sinks", indent=False)
        self.causal = widgets.Checkbox(value=causal, description="causal", indent=False)
        self.sliding = widgets.Checkbox(value=sliding, description="sliding-window layer (off: full)", indent=False)
        self.output = widgets.Output()
        self.controls = [self.seq_len, self.window, self.n_layers, self.sinks, self.causal, self.sliding]
        for control in self.controls:
            control.observe(self._on_change, names="value")
        self.ui = widgets.VBox([widgets.HBox([self.seq_len, self.window, self.n_layers]),
                                widgets.HBox([self.sinks, self.causal, self.sliding]), self.output])
        self.figure = None
        self.update()

    # the numbers, recomputed from the controls' values
    def update(self) -> None:
        T, W, N = self.seq_len.value, self.window.value, self.n_layers.value
        causal = self.causal.value
        layer = layer_mask(T, W if self.sliding.value else None, causal)
        self.keys_per_query = layer.sum(-1)
        self.mask = with_sink_column(layer) if self.sinks.value else layer
        self.receptive_field = {pattern: receptive_field(T, W, N, pattern, causal)
                                for pattern in LAYER_PATTERNS}
        self.draw()

    def _on_change(self, change) -> None:
        self.update()

    def draw(self) -> None:
        import matplotlib.pyplot as plt
        from IPython import get_ipython
        from IPython.display import clear_output, display

        fig = plot_explorer(self.mask, self.keys_per_query, self.receptive_field, sinks=self.sinks.value,
                            window=self.window.value, sliding=self.sliding.value,
                            n_layers=self.n_layers.value)
        plt.close(fig)  # shown through the Output widget only, not a second time by the backend
        self.figure = fig
        if get_ipython() is None:  # a script or a test: the numbers and `figure` are enough
            return
        with self.output:
            clear_output(wait=True)
            display(fig)

    def _repr_mimebundle_(self, **kwargs):
        return self.ui._repr_mimebundle_(**kwargs)


def plot_explorer(mask, keys_per_query, fields, sinks: bool, window: int, sliding: bool, n_layers: int):
    """Three panels: the mask, keys per query, receptive field per position."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    T = mask.shape[0]
    grid = np.full((T, T + 2), np.nan)
    grid[:, :T] = mask[:, :T].numpy()
    if sinks:
        grid[:, T + 1] = 2.0  # a spare column apart from the keys, in its own colour
    cmap = ListedColormap(["#f2f2f2", "#1f77b4", "#ff7f0e"]).with_extremes(bad="white")

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    ax = axes[0]
    ax.imshow(grid if sinks else grid[:, :T], cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
    ax.set_xlabel("key position u" + ("   (sink last)" if sinks else ""))
    ax.set_ylabel("query position t")
    kind = f"sliding-window layer, W = {window}" if sliding else "full layer"
    ax.set_title(f"mask: {kind}")
    if sinks:
        ticks = [t for t in ax.get_xticks() if 0 <= t < T]
        ax.set_xticks(ticks + [T + 1], [str(int(t)) for t in ticks] + ["sink"])

    ax = axes[1]
    ax.plot(range(T), keys_per_query.numpy(), marker=".", color="#1f77b4")
    ax.set_xlabel("query position t")
    ax.set_ylabel("keys attended")
    ax.set_title("keys per query" + (" (+1 sink entry)" if sinks else ""))
    ax.set_ylim(0, T + 1)

    ax = axes[2]
    styles = {"alternating": ("N alternating (gpt-oss)", "#2ca02c", "-"),
              "sliding": ("N sliding-window", "#d62728", "--"), "full": ("N full", "#7f7f7f", ":")}
    for pattern, (label, color, line) in styles.items():
        ax.plot(range(T), fields[pattern].numpy(), line, color=color, label=label, linewidth=2)
    ax.set_xlabel("position t")
    ax.set_ylabel("input tokens that can reach t")
    ax.set_title(f"receptive field after N = {n_layers} layers")
    ax.set_ylim(0, T + 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
