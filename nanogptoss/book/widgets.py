"""The book's live explorers: attention masks (chapters 5, 6), RoPE (3), the router (8).

Each explorer is an `anywidget` whose drawing and arithmetic live in one ES module,
`js/explorers.js`, run by the browser: its controls respond in Jupyter, JupyterLab,
VS Code and Colab, and on the static site too, where the widget manager runs the
module saved in the notebook's widget state (no kernel needed). With a kernel, every
change also reaches the Python object, which recomputes the same numbers with the
library (`attention_mask`, `Router`, `load_balancing_loss`, `RotaryEmbedding`); the
tests check that the browser's numbers equal these.

The attention-mask numbers are plain functions (`layer_mask`, `with_sink_column`,
`layer_stack`, `receptive_field`) that need only torch.
"""

from __future__ import annotations

import re
from pathlib import Path

import anywidget
import torch
import traitlets

from ..config import FULL, SLIDING, alternating_layer_types
from ..model.attention import attention_mask
from ..model.rope import RotaryEmbedding, apply_rotary_emb
from ..model.router import Router, expert_counts, load_balancing_loss

# the one JavaScript source of every explorer, for every front-end and the static site
EXPLORERS_JS = Path(__file__).with_name("js") / "explorers.js"

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


class _Explorer(anywidget.AnyWidget):
    """An explorer: the ES module draws and computes; subclasses recompute in Python."""

    _esm = EXPLORERS_JS
    explorer = traitlets.Unicode().tag(sync=True)  # which of the module's explorers to draw

    def __init__(self, **values):
        super().__init__(**values)
        self.observe(lambda change: self.update(), names=list(self._inputs))
        self.update()

    def __repr__(self) -> str:  # the notebook's text fallback: the settings, not an address
        return f"{type(self).__name__}({', '.join(f'{name}={getattr(self, name)!r}' for name in self._inputs if name != 'logits')})"

    def _check(self, name: str, value, low, high):
        if not low <= value <= high:
            raise ValueError(f"{type(self).__name__}: {name} must be between {low} and {high}, got {value}")
        return value


class AttentionMaskExplorer(_Explorer):
    """A layer's mask (banded or dense), keys per query, receptive fields through N layers.

    Attributes kept in step with the controls, for tests and for reading in code:
    `mask` (T, T, or T, T + 1 with the sink column last), `keys_per_query` (T,: real
    keys only, the sink is not a key), `receptive_field` (a dict of (T,) tensors for
    stacks of N "alternating", all-"sliding" and all-"full" layers).
    """

    _inputs = ("seq_len", "window", "n_layers", "sinks", "causal", "sliding")
    explorer = traitlets.Unicode("attention_mask").tag(sync=True)
    seq_len = traitlets.Int(32).tag(sync=True)
    window = traitlets.Int(8).tag(sync=True)
    n_layers = traitlets.Int(4).tag(sync=True)
    sinks = traitlets.Bool(True).tag(sync=True)
    causal = traitlets.Bool(True).tag(sync=True)
    sliding = traitlets.Bool(True).tag(sync=True)  # a sliding-window layer; off: a full one
    max_len = traitlets.Int(64).tag(sync=True)  # the sliders' range

    @traitlets.validate("seq_len")
    def _valid_seq_len(self, proposal):
        return self._check("seq_len", proposal["value"], 1, self.max_len)

    @traitlets.validate("window")
    def _valid_window(self, proposal):
        return self._check("window", proposal["value"], 1, self.max_len)

    @traitlets.validate("n_layers")
    def _valid_n_layers(self, proposal):
        return self._check("n_layers", proposal["value"], 1, 12)

    def update(self) -> None:
        T, W, N = self.seq_len, self.window, self.n_layers
        layer = layer_mask(T, W if self.sliding else None, self.causal)
        self.keys_per_query = layer.sum(-1)
        self.mask = with_sink_column(layer) if self.sinks else layer
        self.receptive_field = {pattern: receptive_field(T, W, N, pattern, self.causal)
                                for pattern in LAYER_PATTERNS}


class RouterExplorer(_Explorer):
    """A few tokens' router logits -> top-k -> softmax over the chosen, and the balancing loss.

    `temperature` divides the logits before the choice; `skew` is added to every token's
    logit for expert 0 (a router that prefers one expert). Kept in step: `weights` and
    `indices` (N, k) from the library's `Router`, `counts` (E,) and `loss` (the
    load-balancing loss of these tokens, `load_balancing_loss`).
    """

    _inputs = ("k", "temperature", "skew", "logits")
    explorer = traitlets.Unicode("router").tag(sync=True)
    logits = traitlets.List(traitlets.List(traitlets.Float())).tag(sync=True)  # (N, E), fixed per explorer
    k = traitlets.Int(2).tag(sync=True)
    temperature = traitlets.Float(1.0).tag(sync=True)
    skew = traitlets.Float(0.0).tag(sync=True)

    def __init__(self, num_tokens: int = 6, num_experts: int = 8, seed: int = 0, **values):
        generator = torch.Generator().manual_seed(seed)
        logits = torch.randn(num_tokens, num_experts, generator=generator)
        super().__init__(logits=[[round(z, 3) for z in row] for row in logits.tolist()], **values)

    @traitlets.validate("k")
    def _valid_k(self, proposal):
        return self._check("k", proposal["value"], 1, len(self.logits[0]) if self.logits else 1)

    @traitlets.validate("temperature")
    def _valid_temperature(self, proposal):
        return self._check("temperature", proposal["value"], 1e-3, 100.0)

    def update(self) -> None:
        if not self.logits:
            return
        logits = torch.tensor(self.logits, dtype=torch.float64)
        logits[:, 0] += self.skew
        logits = logits / self.temperature
        E = logits.shape[1]
        # the library's router with an identity projection: its input is the logits themselves
        router = Router(E, E, self.k).double()
        with torch.no_grad():
            router.weight.copy_(torch.eye(E))
            self.weights, self.indices, _ = router(logits)
        self.counts = expert_counts(self.indices, E)
        self.loss = float(load_balancing_loss(logits, E, self.k))


class RopeExplorer(_Explorer):
    """Pair i of a query at position m and a key at n, rotated; their score against m - n;
    the frequencies per pair with YaRN's `factor` (1: plain RoPE).

    Kept in step, from the library's `RotaryEmbedding` and `apply_rotary_emb`: `inv_freq`
    (h/2,), `concentration`, `score` (q at m against k at n) and `curve` (the score at
    each of `offsets`, the key at 0).
    """

    _inputs = ("m", "n", "pair", "factor")
    explorer = traitlets.Unicode("rope").tag(sync=True)
    q = traitlets.List(traitlets.Float()).tag(sync=True)
    k = traitlets.List(traitlets.Float()).tag(sync=True)
    head_dim = traitlets.Int(64).tag(sync=True)
    base = traitlets.Float(150_000.0).tag(sync=True)  # gpt-oss's rope_theta
    context = traitlets.Int(4096).tag(sync=True)  # the original context YaRN stretches
    max_offset = traitlets.Int(2048).tag(sync=True)  # the sliders' and the curve's range
    m = traitlets.Int(12).tag(sync=True)
    n = traitlets.Int(4).tag(sync=True)
    pair = traitlets.Int(0).tag(sync=True)
    factor = traitlets.Float(1.0).tag(sync=True)

    def __init__(self, head_dim: int = 64, seed: int = 0, **values):
        generator = torch.Generator().manual_seed(seed)
        q = torch.randn(head_dim, generator=generator)
        # a key that resembles the query, so the score starts high and falls off with distance
        k = q + 0.3 * torch.randn(head_dim, generator=generator)
        super().__init__(head_dim=head_dim, q=[round(x, 4) for x in q.tolist()],
                         k=[round(x, 4) for x in k.tolist()], **values)

    @traitlets.validate("m", "n")
    def _valid_position(self, proposal):
        return self._check(proposal["trait"].name, proposal["value"], 0, self.max_offset)

    @traitlets.validate("pair")
    def _valid_pair(self, proposal):
        return self._check("pair", proposal["value"], 0, self.head_dim // 2 - 1)

    @traitlets.validate("factor")
    def _valid_factor(self, proposal):
        return self._check("factor", proposal["value"], 1.0, 1024.0)

    @property
    def offsets(self) -> list[int]:
        return [round(j * self.max_offset / 128) for j in range(129)]

    def update(self) -> None:
        if not self.q:
            return
        rotary = RotaryEmbedding(self.head_dim, self.base, self.factor, self.context)
        self.inv_freq, self.concentration = rotary.inv_freq, rotary.concentration
        q, k = torch.tensor(self.q), torch.tensor(self.k)

        def rotated(x, positions):
            cos, sin = rotary(torch.tensor(positions))
            return apply_rotary_emb(x.expand(len(positions), -1), cos, sin)

        self.score = float((rotated(q, [self.m]) * rotated(k, [self.n])).sum())
        self.curve = (rotated(q, self.offsets) * rotated(k, [0])).sum(-1)


# -- the generation explorer ------------------------------------------------------------------

JS_DIR = Path(__file__).with_name("js")
_IMPORT = re.compile(r'^import \* as (\w+) from "\./([\w-]+\.js)";$', re.M)
_EXPORT = re.compile(r"^export (?:async )?(?:function\*?|class|const|let) ?\*? ?([A-Za-z_$][\w$]*)", re.M)


def inline_module(path: Path) -> str:
    """`path`'s ES module with its `import * as X from "./y.js"` lines replaced by y.js itself,
    wrapped as the object X: anywidget takes one module string, and each function keeps one
    source file (the same files Node's tests import)."""
    text = path.read_text()

    def namespace(match: re.Match) -> str:
        name, source = match.group(1), (path.parent / match.group(2)).read_text()
        if re.search(r"^(import |export default|export \{)", source, re.M):
            raise ValueError(f"{match.group(2)}: only `export function/class/const` can be inlined")
        exported = _EXPORT.findall(source)
        body = re.sub(r"^export ", "", source, flags=re.M)
        return f"const {name} = (() => {{\n{body}\nreturn {{ {', '.join(exported)} }};\n}})();"

    return _IMPORT.sub(namespace, text)


def browser_files() -> dict[str, Path]:
    """The files the generation explorer loads: the shipped weights and their tokenizer's
    ranks, by the name the browser asks for (the site serves them from _static/nanogptoss/)."""
    from ..data.tokenizer import TOKENIZER_DIR
    from ..weights.shipped import NAMES, PRETRAINED_DIR

    files = {f"{name}.safetensors": PRETRAINED_DIR / f"{name}.safetensors" for name in NAMES}
    files["tinystories-4k.tiktoken"] = TOKENIZER_DIR / "tinystories-4k.tiktoken"
    return files


class GenerationExplorer(anywidget.AnyWidget):
    """The book's trained models writing in the browser (js/generation.js, with model.js and
    bpe.js inlined): a prompt, the model, temperature, top-p, seed, the number of new tokens,
    and a Generate button; click a generated token to see each head's attention (with the
    sink's share and the window's edge) and the router's experts when it was chosen.

    The weights never enter the notebook (a synced traitlet would be saved in its widget
    state): the built site fetches them from its _static folder; in a live kernel this object
    sends them, as a message with a binary buffer, when the browser asks.
    """

    _esm = inline_module(JS_DIR / "generation.js")
    pretrained = traitlets.Unicode("tinystories-gptoss").tag(sync=True)
    prompt = traitlets.Unicode("Once upon a time, there was a little dog").tag(sync=True)
    temperature = traitlets.Float(0.8).tag(sync=True)
    top_p = traitlets.Float(0.95).tag(sync=True)
    seed = traitlets.Int(0).tag(sync=True)
    max_new_tokens = traitlets.Int(60).tag(sync=True)

    def __init__(self, pretrained: str = "tinystories-gptoss", **values):
        super().__init__(pretrained=pretrained, **values)
        self.on_msg(self._send_file)

    def __repr__(self) -> str:
        names = ("pretrained", "prompt", "temperature", "top_p", "seed", "max_new_tokens")
        return f"GenerationExplorer({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    def _check(self, name: str, value, low, high):
        if not low <= value <= high:
            raise ValueError(f"GenerationExplorer: {name} must be between {low} and {high}, got {value}")
        return value

    @traitlets.validate("pretrained")
    def _valid_pretrained(self, proposal):
        from ..weights.shipped import NAMES

        if proposal["value"] not in NAMES:
            raise ValueError(f"GenerationExplorer: pretrained must be one of {', '.join(NAMES)}, "
                             f"got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("temperature")
    def _valid_temperature(self, proposal):
        return self._check("temperature", proposal["value"], 0.0, 2.0)

    @traitlets.validate("top_p")
    def _valid_top_p(self, proposal):
        return self._check("top_p", proposal["value"], 0.05, 1.0)

    @traitlets.validate("seed")
    def _valid_seed(self, proposal):
        return self._check("seed", proposal["value"], 0, 2**32 - 1)

    @traitlets.validate("max_new_tokens")
    def _valid_max_new_tokens(self, proposal):
        return self._check("max_new_tokens", proposal["value"], 1, 120)

    def _send_file(self, _, content, buffers) -> None:
        if not isinstance(content, dict) or content.get("request") != "file":
            return
        name, files = content.get("name"), browser_files()
        if name not in files:
            self.send({"file": name, "error": f"no such file {name!r}; the explorer loads {sorted(files)}"})
            return
        self.send({"file": name}, buffers=[files[name].read_bytes()])
