"""Checkers for the book's exercises: does a student's function match the library?

Each `check_*(fn)` calls the student's `fn` on several random inputs (varied shapes,
dtypes and edge cases), compares every result with the library's own implementation
and prints one line, "PASS: check_x: ..." or "FAIL: check_x: ...". It returns a
`CheckResult`, true when the function passed, which a notebook does not display
(the line says it all). A failure names the case, what was wrong (type, shape, dtype
or values) and a hint; where the wrong output matches the typical mistake (interleaved
pairs instead of halves, softmax over all experts, eps outside the square root, an
off-by-one window, float16 arithmetic without the float32 upcast, ...) the hint names
that mistake, and otherwise it points at what to look at, never at the answer. An
exception raised by `fn`, or the untouched stub's None, is a failure too, reported
in one line, so one broken cell never stops a notebook.

The inputs come from a fixed seed, so a result can be reproduced; pass `seed=` for
other draws. `python -m nanogptoss exercises grade FOLDER` runs every notebook of
a folder and reports each checker per student (nanogptoss.book.grading); `... strip
CHAPTERS --out DIR` writes the student handouts (nanogptoss.book.handout).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from ..config import GPT2Config, get_config
from ..data.stories import bits_per_byte
from ..model.attention import attention_mask, attention_reference, repeat_kv
from ..model.generate import next_token_probs
from ..model.moe import Experts, moe_reference
from ..model.norm import RMSNorm
from ..model.params import count_parameters
from ..model.rope import RotaryEmbedding, apply_rotary_emb
from ..model.router import RouterOutput, expert_counts, load_balancing_loss
from ..model.swiglu import swiglu
from .page import fold

CHECKERS: dict[str, Callable] = {}  # name -> checker, in the order of the book
REFERENCES: dict[str, Callable] = {}  # checker name -> the library's answer, with the exercise's signature
FALLBACK_HINTS: dict[str, str] = {}  # checker name -> its hint when no named mistake matches (set by a run)


def _register(checker: Callable) -> Callable:
    CHECKERS[checker.__name__] = checker
    return checker


class CheckResult:
    """What a checker found. True when the student's function passed; `message` is the
    line it printed (without "PASS: name: "). Jupyter shows nothing for it: the printed
    line is the report, so a checker cell never ends with a stray `True`."""

    __slots__ = ("name", "passed", "message")

    def __init__(self, name: str, passed: bool, message: str):
        self.name, self.passed, self.message = name, passed, message

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"<{self.name}: {'PASS' if self.passed else 'FAIL'}>"

    def _ipython_display_(self):
        pass  # the PASS/FAIL line is already printed


# -- the library's versions that stand in for a chapter's own code in a handout -------

_stand_in_calls: list[str] = []  # names of stand-ins called while a checker runs


def reference(checker: str) -> Callable:
    """The library's answer to `checker`'s exercise, with the exercise's signature.

    A handout (nanogptoss.book.handout) calls it where the chapter's own code for the
    exercise stood, so that the rest of the chapter still runs; a checker given a
    function that calls it fails: the point is to write it yourself.
    """
    if checker not in REFERENCES:
        raise ValueError(f"no exercise reference for {checker!r}; known: {', '.join(REFERENCES)}")
    library = REFERENCES[checker]

    def stand_in(*args, **kwargs):
        _stand_in_calls.append(checker)
        return library(*args, **kwargs)

    stand_in.__name__ = stand_in.__qualname__ = f"reference_{checker.removeprefix('check_')}"
    return stand_in


class Case(NamedTuple):
    label: str  # shown on failure, e.g. "bf16 input of shape (2, 3, 8)"
    args: tuple  # what the student's function is called with
    expected: object  # the library's answer
    atol: float = 1e-5
    rtol: float = 1e-4


class Mistake(NamedTuple):
    wrong: Callable  # the same arguments -> what a typical wrong implementation returns
    hint: str


class Misread(NamedTuple):
    """An argument read the wrong way round (weights as (out, in), ...): such a function
    raises or is off, yet gives the expected answer on the arguments as it reads them."""
    as_read: Callable  # the case's arguments -> the same arguments in the misread layout
    hint: str


def _clone(a):
    # the student's function gets its own copies: an in-place edit must not change the reference
    if isinstance(a, torch.Tensor):
        return a.clone()
    if isinstance(a, (tuple, list)):
        return type(a)(_clone(x) for x in a)
    return a


def _tensor_problem(out, expected: torch.Tensor, atol: float, rtol: float, what: str = "the result"):
    """None when `out` matches `expected`, else a sentence saying how it differs."""
    if not isinstance(out, torch.Tensor):
        return f"{what} is a {type(out).__name__}, expected a torch.Tensor"
    if out.shape != expected.shape:
        return f"{what} has shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
    if out.dtype != expected.dtype:
        return f"{what} has dtype {out.dtype}, expected {expected.dtype}"
    out, expected = out.detach().cpu(), expected.detach().cpu()
    if expected.dtype == torch.bool:
        if torch.equal(out, expected):
            return None
        bad = (out != expected).nonzero()[0].tolist()
        return (f"{what} differs in {int((out != expected).sum())} of {expected.numel()} entries "
                f"(first at index {tuple(bad)}: got {bool(out[tuple(bad)])}, expected {bool(expected[tuple(bad)])})")
    o, e = out.double(), expected.double()
    if torch.isnan(o).any() and not torch.isnan(e).any():
        return f"{what} contains NaN"
    if torch.allclose(o, e, atol=atol, rtol=rtol, equal_nan=True):  # NaN only where a planted mistake has it
        return None
    err = (o - e).abs().nan_to_num(float("inf"))
    worst = tuple(torch.unravel_index(err.argmax(), err.shape)) if err.dim() else ()
    worst = tuple(int(i) for i in worst)
    return (f"{what} is off: max abs error {err.max().item():.3g} at index {worst} "
            f"(got {o[worst].item():.6g}, expected {e[worst].item():.6g})")


def _same(out, wrong, atol: float, rtol: float) -> bool:
    if isinstance(wrong, tuple):
        return (isinstance(out, (tuple, list)) and len(out) == len(wrong)
                and all(_same(o, w, atol, rtol) for o, w in zip(out, wrong)))
    if isinstance(wrong, (int, float)):
        return _number_problem(out, wrong) is None
    return _tensor_problem(out, wrong, atol, rtol) is None


def _report(name: str, ok: bool, message: str) -> CheckResult:
    # folded to the page's width, so a long hint is read whole, not scrolled (grading reads it unfolded)
    print(fold(f"{'PASS' if ok else 'FAIL'}: {name}: {message}"))
    return CheckResult(name, ok, message)


STUB = "your function returned None, so it is still the stub: write its body in place of `...` and return the result"


def _misread_hint(fn: Callable, case: Case, misreads: list[Misread], compare: Callable, call: Callable):
    """The hint of the misread under which `fn` gives the expected answer, else None."""
    for misread in misreads:
        try:
            with torch.no_grad():
                out = call(fn, *misread.as_read(*_clone(case.args)))
            if out is not None and compare(out, case) is None:
                return misread.hint
        except Exception:
            continue
    return None


def _run(name: str, fn: Callable, cases: list[Case], mistakes: list[Mistake], library: str,
         hint: str, compare: Callable | None = None, call: Callable | None = None,
         misreads: list[Misread] = ()) -> CheckResult:
    """Call `fn` on every case; the first disagreement is reported with the best hint found.

    `hint` is the fallback when no named mistake matches: it points at what to compare
    with the chapter, it does not give the code. `call(fn, *args)` replaces `fn(*args)`
    where the exercise's function is called in a loop (a schedule over all steps).
    """
    FALLBACK_HINTS[name] = hint
    if not callable(fn):
        return _report(name, False, f"expected a function, got a {type(fn).__name__}. "
                                    f"Hint: pass the function itself, e.g. {name}(my_fn), not my_fn(...)")
    compare = compare or (lambda out, c: _tensor_problem(out, c.expected, c.atol, c.rtol))
    call = call or (lambda f, *args: f(*args))
    for case in cases:
        del _stand_in_calls[:]
        try:
            with torch.no_grad():
                out = call(fn, *_clone(case.args))
        except Exception as exc:  # the student's code: report whatever it raised
            specific = _misread_hint(fn, case, misreads, compare, call) or hint
            return _report(name, False, f"case {case.label}: your function raised "
                                        f"{type(exc).__name__}: {exc}. Hint: {specific}")
        if _stand_in_calls:
            return _report(name, False, f"your function calls reference({_stand_in_calls[0]!r}), the library's "
                                        "version that stands in for the chapter's code in the handout. "
                                        "Hint: write the computation yourself")
        if out is None:
            return _report(name, False, STUB)
        problem = compare(out, case)
        if problem is None:
            continue
        specific = _misread_hint(fn, case, misreads, compare, call) or hint
        for mistake in mistakes:
            try:
                with torch.no_grad():
                    wrong = mistake.wrong(*_clone(case.args))
            except Exception:
                continue
            if _same(out, wrong, case.atol, case.rtol):
                specific = mistake.hint
                break
        return _report(name, False, f"case {case.label}: {problem}. Hint: {specific}")
    return _report(name, True, f"all {len(cases)} cases match {library}")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, generator=g)).to(dtype)


def _shape(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)}" + ("" if t.dtype == torch.float32 else f" {str(t.dtype).replace('torch.', '')}")


BF16 = dict(atol=3e-2, rtol=3e-2)


# -- chapter 0: bits per byte -----------------------------------------------------

def _bpb_ref(loss_nats_per_token, n_tokens, n_bytes):
    return bits_per_byte(loss_nats_per_token, {"count": n_tokens, "bytes": n_bytes})


def _number_problem(out, expected: float, rel: float = 1e-9):
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, (int, float)):
        return f"the result is a {type(out).__name__}, expected a number"
    if math.isclose(out, expected, rel_tol=rel):
        return None
    return f"got {out:.6g}, expected {expected:.6g} (ratio {out / expected:.4g})" if expected else f"got {out:.6g}"


@_register
def check_bits_per_byte(fn: Callable, seed: int = 0) -> CheckResult:
    """fn(loss_nats_per_token, n_tokens, n_bytes) -> the text's cross-entropy in bits per UTF-8 byte."""
    g = _gen(seed)
    cases = [Case(f"loss {loss:.4g} nats/token, {n_tokens:,} tokens, {n_bytes:,} bytes",
                  (loss, n_tokens, n_bytes), _bpb_ref(loss, n_tokens, n_bytes))
             for loss, n_tokens, n_bytes in ((2.0, 1000, 4000), (math.log(4096), 12_345, 40_000), (0.5, 1, 1),
                                             (float(1 + 3 * torch.rand(1, generator=g)), 777, 3_100))]
    mistakes = [
        Mistake(lambda l, t, b: l * t / b, "the loss is in nats: divide by ln 2 to turn nats into bits"),
        Mistake(lambda l, t, b: l * t / b * math.log(2), "divide by ln 2 (nats to bits), do not multiply"),
        Mistake(lambda l, t, b: l / math.log(2), "that is bits per token: scale by tokens per byte, n_tokens / n_bytes"),
        Mistake(lambda l, t, b: l * b / t / math.log(2), "tokens per byte is n_tokens / n_bytes, not n_bytes / n_tokens"),
    ]
    return _run("check_bits_per_byte", fn, cases, mistakes, "nanogptoss.data.stories.bits_per_byte",
                "the total information of the text is the loss per token times the tokens; spread it over the "
                "bytes, in bits", lambda out, c: _number_problem(out, c.expected))


# -- chapter 1: GPT-2's parameters ---------------------------------------------------

@_register
def check_gpt2_parameters(fn: Callable, seed: int = 0) -> CheckResult:
    """fn(config) -> the parameter count of a GPT-2 config (tied embeddings, learned positions)."""
    configs = [("GPT-2 small", GPT2Config()), ("cpu-tiny as a GPT-2", get_config("cpu-tiny", model="gpt2")),
               ("colab-t4 as a GPT-2", get_config("colab-t4", model="gpt2"))]
    cases = [Case(name, (c,), count_parameters(c).total) for name, c in configs]

    def compare(out, case):
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.item()
        if isinstance(out, float) and out.is_integer():
            out = int(out)
        if isinstance(out, bool) or not isinstance(out, int):
            return f"the result is a {type(out).__name__}, expected an int"
        c, diff = case.args[0], out - case.expected
        if diff == 0:
            return None
        V, T, L, d = c.vocab_size, c.max_position_embeddings, c.num_hidden_layers, c.hidden_size
        known = {V * d: "the embedding is tied to the unembedding: count the vocab_size × hidden_size matrix once",
                 -T * d: "the learned position embeddings, max_position_embeddings × hidden_size",
                 -(L * (4 * d + 4 * d + d) + 0): "the biases of the linear layers",
                 -(L * 2 * d + d): "the LayerNorms have a bias as well as a weight",
                 -2 * d: "the final LayerNorm, weight and bias"}
        why = f": {known[diff]}" if diff in known else ""
        return f"got {out:,}, expected {case.expected:,} (off by {diff:+,}{why})"

    return _run("check_gpt2_parameters", fn, cases, [], "nanogptoss.count_parameters",
                "count one block part by part (two LayerNorms, attention, MLP, each linear layer with its bias), "
                "then the embeddings and the final LayerNorm, and compare with the chapter's table", compare)


# -- chapter 2: RMSNorm -------------------------------------------------------

def _rmsnorm_ref(x, weight, eps=1e-5):
    norm = RMSNorm(x.shape[-1], eps).to(x.device)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


@_register
def check_rmsnorm(fn: Callable, seed: int = 0) -> bool:
    """fn(x (..., d), weight (d,), eps) -> RMS-normalised x times weight, in x's dtype."""
    g = _gen(seed)
    cases = []
    for shape, dtype, eps, scale in (((4, 8), torch.float32, 1e-5, 1.0),
                                     ((2, 3, 16), torch.float32, 1e-5, 3.0),
                                     ((5, 8), torch.float32, 0.1, 1.0),  # a large eps shows where it sits
                                     ((3, 8), torch.float32, 1e-5, 1e-3),  # tiny activations: eps matters
                                     ((2, 4, 32), torch.bfloat16, 1e-5, 1.0),
                                     ((2, 8), torch.float16, 1e-5, 300.0)):  # the chapter's example: 300² > 65504
        x = _randn(g, *shape, scale=scale).to(dtype)
        if dtype == torch.float16:
            x[0] = 300.0  # x² overflows float16, so only a float32 computation gets 1.0 here
        w = 1.0 + 0.5 * _randn(g, shape[-1])
        tol = BF16 if dtype in (torch.bfloat16, torch.float16) else {}
        label = f"x {_shape(x)}, eps={eps}, |x|~{scale:g}" + (", first row all 300.0" if dtype == torch.float16 else "")
        cases.append(Case(label, (x, w, eps), _rmsnorm_ref(x, w, eps).detach(), **tol))

    def f32(fn):
        return lambda x, w, eps: fn(x.float(), w.float(), eps).to(x.dtype)

    mistakes = [
        Mistake(lambda x, w, eps: w.to(x.dtype) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps),
                "compute in float32 and cast the result back to x's dtype: in float16, x² overflows above "
                "65504 (300² = 90,000 becomes inf, and x / inf = 0), the chapter's own example"),
        Mistake(f32(lambda x, w, eps: w * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps)),
                "eps goes inside the square root: x / sqrt(mean(x²) + eps), not x / (sqrt(mean(x²)) + eps)"),
        Mistake(f32(lambda x, w, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)),
                "multiply by the learned weight at the end"),
        Mistake(f32(lambda x, w, eps: w * x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)),
                "take the mean of x² over the last dimension, not the sum"),
        Mistake(f32(lambda x, w, eps: w * F.layer_norm(x, x.shape[-1:], eps=eps)),
                "RMSNorm does not subtract the mean (that is LayerNorm): divide by the root-mean-square only"),
        Mistake(f32(lambda x, w, eps: w * x * torch.rsqrt(x.pow(2).mean(0, keepdim=True) + eps)),
                "normalise over the last dimension (dim=-1), one root-mean-square per token"),
        Mistake(lambda x, w, eps: (w * x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)),
                "compute in float32 but return x's dtype: cast back with .to(x.dtype)"),
    ]
    return _run("check_rmsnorm", fn, cases, mistakes, "nanogptoss.RMSNorm",
                "compare your steps with the chapter's formula on the case above: which dimension the mean runs "
                "over, where eps sits, the learned weight, and the dtype each step is computed in")


# -- chapter 3: RoPE ----------------------------------------------------------

def _rope_ref(x, positions, theta):
    cos, sin = RotaryEmbedding(x.shape[-1], theta)(positions)
    return apply_rotary_emb(x, cos, sin)


def _rope_wrong(x, positions, theta, interleaved=False, sign=1.0, exponent=2.0):
    h = x.shape[-1]
    inv_freq = 1.0 / theta ** (exponent * torch.arange(h // 2, dtype=torch.float32) / h)
    angles = positions.float()[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), sign * angles.sin()
    xf = x.float()
    if interleaved:
        x1, x2 = xf[..., ::2], xf[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    else:
        x1, x2 = xf.chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)


@_register
def check_rope(fn: Callable, seed: int = 0) -> bool:
    """fn(x (B, H, T, h), positions (T,), theta) -> x rotated, halves convention."""
    g = _gen(seed)
    cases = []
    for (B, H, T, h), start, theta, dtype in (((1, 2, 6, 8), 0, 10_000.0, torch.float32),
                                              ((2, 3, 5, 16), 7, 150_000.0, torch.float32),  # decoding: positions 7..11
                                              ((1, 1, 4, 2), 0, 10_000.0, torch.float32),  # one pair per head
                                              ((2, 2, 8, 32), 100, 10_000.0, torch.bfloat16)):
        x = _randn(g, B, H, T, h, dtype=dtype)
        pos = torch.arange(start, start + T)
        tol = BF16 if dtype == torch.bfloat16 else {}
        cases.append(Case(f"x {_shape(x)}, positions {start}..{start + T - 1}, theta={theta:g}",
                          (x, pos, theta), _rope_ref(x, pos, theta), **tol))
    mistakes = [
        Mistake(lambda x, p, t: _rope_wrong(x, p, t, interleaved=True),
                "gpt-oss pairs dimension i with dimension i + h/2 (two halves, x.chunk(2, -1)), "
                "not neighbouring dimensions (2i, 2i+1)"),
        Mistake(lambda x, p, t: _rope_wrong(x, p, t, sign=-1.0),
                "the rotation goes the other way: (x1·cos − x2·sin, x2·cos + x1·sin)"),
        Mistake(lambda x, p, t: _rope_wrong(x, p, t, exponent=1.0),
                "the frequencies are theta^(−2i/h) for i = 0 .. h/2−1, i.e. torch.arange(0, h, 2) / h"),
        Mistake(lambda x, p, t: _rope_wrong(x, torch.arange(x.shape[2]), t),
                "rotate by the given positions, not by 0..T−1 (during decoding they start later)"),
    ]
    return _run("check_rope", fn, cases, mistakes, "nanogptoss.model.rope (RotaryEmbedding + apply_rotary_emb)",
                "check against the chapter which dimensions form a pair, the frequency of pair i, "
                "and the direction of the rotation")


# -- chapter 4: grouped-query attention ---------------------------------------

@_register
def check_repeat_kv(fn: Callable, seed: int = 0) -> bool:
    """fn(k (B, G, T, h), n_rep) -> (B, G * n_rep, T, h), each head copied for its group."""
    g = _gen(seed)
    cases = []
    for (B, G, T, h), n_rep in (((1, 2, 3, 4), 3), ((2, 4, 5, 8), 2), ((1, 1, 4, 4), 4), ((2, 3, 2, 4), 1)):
        k = _randn(g, B, G, T, h)
        cases.append(Case(f"k {_shape(k)}, n_rep={n_rep}", (k, n_rep), repeat_kv(k, n_rep), atol=0, rtol=0))
    mistakes = [
        Mistake(lambda k, n: k.repeat(1, n, 1, 1),
                "copy each K/V head n_rep times in a row (head 0, 0, 0, 1, 1, 1, ...: repeat_interleave), "
                "not the whole stack tiled (0, 1, 0, 1, ...): query heads 0..n_rep−1 share K/V head 0"),
        Mistake(lambda k, n: k.repeat_interleave(n, dim=2),
                "repeat along the head dimension (dim=1), not the time dimension"),
    ]
    return _run("check_repeat_kv", fn, cases, mistakes, "nanogptoss.model.attention.repeat_kv",
                "query heads g·n_rep .. g·n_rep + n_rep − 1 all read K/V head g: check the order of the copies "
                "and the dimension you copy along")


# -- chapter 5: sliding-window attention and sinks ---------------------------

def _mask_ref(T, window=None):
    pos = torch.arange(T)
    return attention_mask(pos, pos, window)


@_register
def check_sliding_window_mask(fn: Callable, seed: int = 0) -> bool:
    """fn(seq_len, window or None) -> bool (T, T), True where query t may see key u."""
    cases = [Case(f"seq_len={T}, window={W}", (T, W), _mask_ref(T, W))
             for T, W in ((6, None), (8, 3), (5, 1), (5, 5), (4, 10), (1, None), (7, 2))]

    def banded(T, W, test):
        t, u = torch.arange(T)[:, None], torch.arange(T)[None, :]
        return test(t - u, W if W is not None else T + 1)

    mistakes = [
        Mistake(lambda T, W: banded(T, W, lambda d, W: (d >= 0) & (d <= W)),
                "off by one: a query sees itself and the W−1 keys before it (t − u < W, not t − u <= W)"),
        Mistake(lambda T, W: banded(T, W, lambda d, W: (d >= 0) & (d < W - 1)),
                "off by one: a query sees itself and the W−1 keys before it, i.e. t − u < W"),
        Mistake(lambda T, W: banded(T, W, lambda d, W: d.abs() < W),
                "the mask must be causal too: no key after the query (u <= t)"),
        Mistake(lambda T, W: banded(T, W, lambda d, W: (d <= 0) & (-d < W)),
                "rows are queries and columns keys: mask[t, u] is True when u <= t (lower triangle)"),
        Mistake(lambda T, W: banded(T, None, lambda d, W: d >= 0),
                "apply the window: with window W only keys with t − u < W stay visible"),
    ]

    def compare(out, case):
        if isinstance(out, torch.Tensor) and out.dtype != torch.bool and out.shape == case.expected.shape:
            return f"the result has dtype {out.dtype}, expected torch.bool (True = may attend)"
        return _tensor_problem(out, case.expected, 0, 0)

    return _run("check_sliding_window_mask", fn, cases, mistakes, "nanogptoss.model.attention.attention_mask",
                "print your mask for the case above next to the chapter's picture: check the causal "
                "triangle and the window's edge", compare)


def _sink_ref(q, k, v, sinks):
    T = q.shape[2]
    return attention_reference(q, k, v, _mask_ref(T, None), sinks)


def _sink_wrong(q, k, v, sinks, use_sinks=True, causal=True, scale=True):
    T, h = q.shape[2], q.shape[3]
    scores = q @ k.transpose(-2, -1) / (math.sqrt(h) if scale else 1.0)
    if causal:
        scores = scores.masked_fill(~_mask_ref(T, None), float("-inf"))
    if use_sinks:
        sink = sinks.view(1, -1, 1, 1).expand(*scores.shape[:3], 1)
        probs = torch.softmax(torch.cat([scores, sink], -1), -1)[..., :-1]
    else:
        probs = torch.softmax(scores, -1)
    return probs @ v


@_register
def check_sink_attention(fn: Callable, seed: int = 0) -> bool:
    """fn(q, k, v (B, H, T, h), sinks (H,)) -> causal attention output with sinks (B, H, T, h)."""
    g = _gen(seed)
    cases = []
    for (B, H, T, h), sink_scale, sink_shift in (((1, 2, 5, 8), 1.0, 0.0), ((2, 4, 7, 16), 1.0, 0.0),
                                                 ((1, 2, 6, 8), 0.0, 10.0),  # a dominant sink: outputs shrink to 0
                                                 ((1, 3, 1, 4), 1.0, 0.0)):  # one token
        q, k, v = (_randn(g, B, H, T, h) for _ in range(3))
        sinks = sink_scale * _randn(g, H) + sink_shift
        cases.append(Case(f"q {_shape(q)}, sinks ~ {sink_shift:g} ± {sink_scale:g}", (q, k, v, sinks),
                          _sink_ref(q, k, v, sinks)))
    mistakes = [
        Mistake(lambda q, k, v, s: _sink_wrong(q, k, v, s, use_sinks=False),
                "the sink is one extra logit per head appended to every row of scores before the softmax "
                "and dropped after it (adding it to every score changes nothing: softmax ignores shifts)"),
        Mistake(lambda q, k, v, s: _sink_wrong(q, k, v, s, causal=False),
                "mask the future: query t may only attend to keys u <= t"),
        Mistake(lambda q, k, v, s: _sink_wrong(q, k, v, s, scale=False),
                "scale the scores by 1/sqrt(head_dim)"),
    ]
    return _run("check_sink_attention", fn, cases, mistakes, "nanogptoss.model.attention.attention_reference",
                "the sink is one more logit in each row's softmax that no value goes with; "
                "check the scale and the causal mask too")


# -- chapter 7: the clamped SwiGLU --------------------------------------------

def _swiglu_wrong(gate_up, alpha, limit, halves=False, swap=False, plus_one=True, clamp="gpt-oss"):
    if halves:
        gate, up = gate_up.chunk(2, dim=-1)
    else:
        gate, up = gate_up[..., ::2], gate_up[..., 1::2]
    if swap:
        gate, up = up, gate
    if clamp == "gpt-oss":
        gate, up = gate.clamp(max=limit), up.clamp(-limit, limit)
    elif clamp == "both":
        gate, up = gate.clamp(-limit, limit), up.clamp(-limit, limit)
    elif clamp == "gate-only":
        gate = gate.clamp(max=limit)
    return gate * torch.sigmoid(alpha * gate) * (up + 1 if plus_one else up)


@_register
def check_swiglu(fn: Callable, seed: int = 0) -> bool:
    """fn(gate_up (..., 2h) interleaved gate/up, alpha, limit) -> (..., h)."""
    g = _gen(seed)
    cases = []
    for shape, alpha, limit, scale, dtype in (((4, 6), 1.702, 7.0, 1.0, torch.float32),
                                              ((2, 3, 8), 1.702, 7.0, 12.0, torch.float32),  # hits the clamps
                                              ((5, 4), 1.0, 2.0, 4.0, torch.float32),
                                              ((3, 16), 1.702, 7.0, 10.0, torch.bfloat16)):
        x = _randn(g, *shape, scale=scale).to(dtype)
        tol = BF16 if dtype == torch.bfloat16 else {}
        cases.append(Case(f"gate_up {_shape(x)}, alpha={alpha}, limit={limit}, |x|~{scale:g}",
                          (x, alpha, limit), swiglu(x, alpha, limit), **tol))
    mistakes = [
        Mistake(lambda x, a, l: _swiglu_wrong(x, a, l, halves=True),
                "gate and up are interleaved: gate = x[..., ::2], up = x[..., 1::2] (not the two halves)"),
        Mistake(lambda x, a, l: _swiglu_wrong(x, a, l, swap=True),
                "the even columns (x[..., ::2]) are the gate, the odd ones the up projection"),
        Mistake(lambda x, a, l: _swiglu_wrong(x, a, l, plus_one=False),
                "gpt-oss multiplies by (up + 1), not by up"),
        Mistake(lambda x, a, l: _swiglu_wrong(x, a, l, clamp="none"),
                "clamp first: gate at most `limit`, up between −limit and +limit"),
        Mistake(lambda x, a, l: _swiglu_wrong(x, a, l, clamp="both"),
                "the gate is clamped from above only (gate.clamp(max=limit)); only up is clamped on both sides"),
        Mistake(lambda x, a, l: _swiglu_wrong(x, a, l, clamp="gate-only"),
                "up is clamped too, to [−limit, limit]"),
        Mistake(lambda x, a, l: _swiglu_wrong(x, 1.0, l),
                "use alpha inside the sigmoid: gate · sigmoid(alpha · gate)"),
    ]
    return _run("check_swiglu", fn, cases, mistakes, "nanogptoss.model.swiglu.swiglu",
                "check which columns are the gate and which the up projection, both clamps, "
                "where alpha goes and the +1, against the chapter's formula")


# -- chapter 8: the router ----------------------------------------------------

def _router_ref(logits, k):
    top, indices = torch.topk(logits, k, dim=-1)
    return torch.softmax(top.float(), dim=-1).to(top.dtype), indices


@_register
def check_router(fn: Callable, seed: int = 0) -> bool:
    """fn(logits (N, E), k) -> (weights (N, k), indices (N, k)); pairs may come in any order."""
    g = _gen(seed)
    cases = []
    for N, E, k, scale in ((10, 8, 2, 1.0), (6, 4, 1, 1.0), (5, 4, 4, 2.0), (12, 32, 4, 3.0)):
        logits = _randn(g, N, E, scale=scale)
        cases.append(Case(f"logits {_shape(logits)}, k={k}", (logits, k), _router_ref(logits, k)))

    def by_expert(weights, indices):
        # the checker accepts the k chosen experts in any order: compare them sorted by expert id
        order = indices.argsort(dim=-1)
        return weights.gather(-1, order), indices.gather(-1, order)

    def compare(out, case):
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            return f"the result is a {type(out).__name__}, expected a pair (weights, indices)"
        weights, indices = out
        exp_w, exp_i = case.expected
        for t, what, e in ((weights, "weights", exp_w), (indices, "indices", exp_i)):
            if not isinstance(t, torch.Tensor):
                return f"{what} is a {type(t).__name__}, expected a torch.Tensor"
            if t.shape != e.shape:
                return f"{what} has shape {tuple(t.shape)}, expected {tuple(e.shape)}"
        if indices.dtype not in (torch.long, torch.int32):
            return f"indices have dtype {indices.dtype}, expected integer expert ids (torch.long)"
        got_w, got_i = by_expert(weights.float(), indices.long())
        want_w, want_i = by_expert(exp_w, exp_i)
        if not torch.equal(got_i, want_i):
            row = int((got_i != want_i).any(-1).nonzero()[0])
            return (f"indices differ: token {row} chose experts {sorted(indices[row].tolist())}, "
                    f"expected {sorted(exp_i[row].tolist())}")
        return _tensor_problem(got_w, want_w, case.atol, case.rtol, "weights")

    def all_softmax(logits, k):
        probs = torch.softmax(logits, -1)
        return torch.topk(probs, k, -1)

    mistakes = [
        Mistake(lambda l, k: tuple(all_softmax(l, k)),
                "softmax over the k chosen logits only, not over all experts: "
                "each token's k weights must sum to 1"),
        Mistake(lambda l, k: tuple(torch.topk(l, k, -1)),
                "the weights are a softmax of the chosen logits, not the raw logits"),
        Mistake(lambda l, k: (torch.softmax(torch.topk(l, k, -1, largest=False).values, -1),
                              torch.topk(l, k, -1, largest=False).indices),
                "keep the k largest logits (torch.topk's default), not the smallest"),
        Mistake(lambda l, k: (torch.softmax(torch.topk(l, k, -1).values, 0), torch.topk(l, k, -1).indices),
                "softmax along the last dimension (over each token's k experts), not over tokens"),
    ]
    return _run("check_router", fn, cases, mistakes, "nanogptoss.model.router.Router (top-k, softmax over the chosen)",
                "the k experts are the k largest logits, and their weights come from those k logits alone",
                compare)


@_register
def check_load_balancing_loss(fn: Callable, seed: int = 0) -> bool:
    """fn(router_logits (N, E), num_experts, experts_per_token) -> scalar tensor."""
    g = _gen(seed)
    cases = []
    for N, E, k, scale, skew in ((16, 4, 2, 1.0, 0.0), (32, 8, 1, 1.0, 0.0), (24, 8, 4, 2.0, 0.0),
                                 (20, 4, 2, 1.0, 3.0)):  # every token prefers expert 0: a large loss
        logits = _randn(g, N, E, scale=scale)
        logits[:, 0] += skew
        cases.append(Case(f"logits {_shape(logits)}, experts_per_token={k}" + (", skewed to expert 0" if skew else ""),
                          (logits, E, k), load_balancing_loss(logits, E, k)))

    def parts(logits, E, k, chosen_k=None):
        probs = torch.softmax(logits, -1)
        chosen = torch.topk(probs, chosen_k or k, -1).indices
        fraction = F.one_hot(chosen.reshape(-1), E).sum(0).float() / logits.shape[0]
        return probs, chosen, fraction

    def variant(logits, E, k, factor=True, per_slot=False, top1=False, mean_of="probs"):
        probs, chosen, fraction = parts(logits, E, k, 1 if top1 else None)
        if per_slot:
            fraction = fraction / k
        if mean_of == "logits":
            p = logits.mean(0)
        elif mean_of == "chosen":
            w = torch.softmax(torch.topk(logits, k, -1).values, -1)
            p = torch.zeros_like(probs).scatter(-1, chosen, w).mean(0)
        else:
            p = probs.mean(0)
        return (E if factor else 1) * (fraction * p).sum()

    def compare(out, case):
        if isinstance(out, (int, float)):
            out = torch.tensor(float(out))
        if isinstance(out, torch.Tensor) and out.numel() == 1 and out.dim() > 0:
            return f"the result has shape {tuple(out.shape)}, expected a scalar: use .sum() or .squeeze()"
        return _tensor_problem(out.float() if isinstance(out, torch.Tensor) else out,
                               case.expected, case.atol, case.rtol)

    mistakes = [
        Mistake(lambda l, E, k: variant(l, E, k, factor=False), "multiply the sum by the number of experts E"),
        Mistake(lambda l, E, k: variant(l, E, k, per_slot=True),
                "divide each expert's count by the number of tokens N, not N·k "
                "(transformers' convention: perfectly uniform routing gives k)"),
        Mistake(lambda l, E, k: variant(l, E, k, top1=True),
                "count all top-k assignments of each token, not only its first choice"),
        Mistake(lambda l, E, k: variant(l, E, k, mean_of="chosen"),
                "the mean probability comes from the softmax over all E logits, not from the renormalised top-k weights"),
        Mistake(lambda l, E, k: variant(l, E, k, mean_of="logits"),
                "average the softmax probabilities, not the raw logits"),
    ]
    return _run("check_load_balancing_loss", fn, cases, mistakes, "nanogptoss.model.router.load_balancing_loss",
                "compute the chapter's two vectors separately, the fraction of assignments f and the mean "
                "probability P per expert, and compare each with a hand count on a small input", compare)


# -- chapter 9: mixture of experts -------------------------------------------

def _experts_from(gate_up_proj, gate_up_bias, down_proj, down_bias):
    E, d, two_f = gate_up_proj.shape
    experts = Experts(E, d, two_f // 2)
    with torch.no_grad():
        experts.gate_up_proj.copy_(gate_up_proj)
        experts.gate_up_proj_bias.copy_(gate_up_bias)
        experts.down_proj.copy_(down_proj)
        experts.down_proj_bias.copy_(down_bias)
    return experts


def _moe_ref(x, weights, indices, gate_up_proj, gate_up_bias, down_proj, down_bias):
    experts = _experts_from(gate_up_proj, gate_up_bias, down_proj, down_bias)
    return moe_reference(x, experts, RouterOutput(weights, indices, None))


def _moe_wrong(x, weights, indices, W1, b1, W2, b2, use_weights=True, halves=False, biases=True,
               weight_bias=True, plain_silu=False):
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for w, e in zip(weights[n], indices[n].tolist()):
            a = x[n] @ W1[e] + (b1[e] if biases else 0)
            if halves:
                gate, up = a.chunk(2)
                h = F.silu(gate) * up if plain_silu else swiglu(torch.stack((gate, up), -1).flatten())
            elif plain_silu:
                h = F.silu(a[::2]) * a[1::2]
            else:
                h = swiglu(a)
            y = h @ W2[e]
            w = w if use_weights else 1.0
            bias = b2[e] if biases else 0
            out[n] += w * (y + bias) if weight_bias else w * y + bias
    return out


@_register
def check_moe(fn: Callable, seed: int = 0) -> bool:
    """fn(x (N, d), weights (N, k), indices (N, k), gate_up_proj (E, d, 2f), gate_up_bias (E, 2f),
    down_proj (E, f, d), down_bias (E, d)) -> (N, d); alpha 1.702, limit 7 as in gpt-oss."""
    g = _gen(seed)
    cases = []
    for N, d, f, E, k in ((6, 8, 12, 4, 2), (5, 6, 4, 3, 1), (8, 4, 6, 6, 3), (3, 8, 8, 8, 2)):
        x = _randn(g, N, d)
        logits = _randn(g, N, E, scale=2.0)
        if E >= 6:
            logits[:, -1] -= 100.0  # the last expert is chosen by no token
        weights, indices = _router_ref(logits, k)
        params = (_randn(g, E, d, 2 * f, scale=0.5), _randn(g, E, 2 * f, scale=0.5),
                  _randn(g, E, f, d, scale=0.5), _randn(g, E, d, scale=0.5))
        args = (x, weights, indices) + params
        cases.append(Case(f"N={N} tokens, d={d}, f={f}, E={E} experts, k={k}", args, _moe_ref(*args)))
    mistakes = [
        Mistake(lambda *a: _moe_wrong(*a, plain_silu=True),
                "the experts use gpt-oss's SwiGLU (chapter 7: interleaved gate/up, both clamps, alpha, up + 1), "
                "not plain SiLU(gate) · up: reuse nanogptoss.model.swiglu"),
        Mistake(lambda *a: _moe_wrong(*a, halves=True, plain_silu=True),
                "the experts use gpt-oss's SwiGLU (chapter 7: interleaved gate/up, both clamps, alpha, up + 1), "
                "not plain SiLU(gate) · up on the two halves: reuse nanogptoss.model.swiglu"),
        Mistake(lambda *a: _moe_wrong(*a, use_weights=False),
                "multiply each chosen expert's output by its routing weight before summing"),
        Mistake(lambda *a: _moe_wrong(*a, halves=True),
                "the expert's gate_up output is interleaved (gate = even columns): reuse nanogptoss.model.swiglu"),
        Mistake(lambda *a: _moe_wrong(*a, biases=False),
                "add the biases: gate_up_bias[e] after the first matmul, down_bias[e] after the second"),
        Mistake(lambda *a: _moe_wrong(*a, weight_bias=False),
                "the routing weight multiplies the whole expert output, down_bias[e] included"),
    ]
    transposed = (lambda x, w, i, W1, b1, W2, b2: (x, w, i, W1.transpose(1, 2), b1, W2.transpose(1, 2), b2))
    misreads = [Misread(transposed, "the expert weights are stored (in, out): gate_up_proj[e] is (d, 2f) and "
                                    "down_proj[e] is (f, d), so multiply x @ W, not F.linear(x, W) (which "
                                    "computes x @ W.T, for nn.Linear's (out, in) layout)")]
    return _run("check_moe", fn, cases, mistakes, "nanogptoss.model.moe.moe_reference",
                "write the plain loop over tokens and their k choices first (the chapter's moe_token_loop), "
                "make it pass, then vectorise", misreads=misreads)


@_register
def check_expert_counts(fn: Callable, seed: int = 0) -> bool:
    """fn(indices (N, k), num_experts) -> (E,) how many token-slots each expert received."""
    g = _gen(seed)
    cases = []
    for N, E, k in ((10, 4, 2), (7, 8, 1), (12, 6, 3)):
        indices = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(N)])
        if E >= 6:
            indices[indices == E - 1] = 0  # an unused last expert must still get its 0
        cases.append(Case(f"indices {tuple(indices.shape)}, num_experts={E}", (indices, E),
                          expert_counts(indices, E), atol=0, rtol=0))

    def compare(out, case):
        # counts are exact: any integer dtype will do, a float one (inexact past 2**24) will not
        if isinstance(out, torch.Tensor) and not out.is_floating_point() and out.dtype != torch.bool:
            out = out.long()
        return _tensor_problem(out, case.expected, 0, 0)

    mistakes = [
        Mistake(lambda i, E: expert_counts(i, E).float(),
                "counts are exact integers: return them in an integer dtype (torch.long), not as floats"),
        Mistake(lambda i, E: torch.bincount(i.reshape(-1)),
                "give every expert a count, unused ones too: torch.bincount(..., minlength=num_experts)"),
        Mistake(lambda i, E: torch.bincount(i[:, 0], minlength=E),
                "count all k choices of each token, not only the first"),
    ]
    return _run("check_expert_counts", fn, cases, mistakes, "nanogptoss.model.router.expert_counts",
                "every expert gets a count, unused ones too, and every one of a token's k choices counts",
                compare)


# -- chapter 10: the whole model ----------------------------------------------

@_register
def check_count_parameters(fn: Callable, seed: int = 0) -> bool:
    """fn(config) -> (total, active) for a GPT-OSS config; active counts k of E experts and the
    unembedding but not the input embedding (the official convention)."""
    configs = [("cpu-tiny", get_config("cpu-tiny")),
               ("cpu-tiny with tied embeddings", get_config("cpu-tiny", tie_word_embeddings=True)),
               ("gpt-oss-20b", get_config("gpt-oss-20b")),
               ("gpt-oss-120b", get_config("gpt-oss-120b"))]
    cases = []
    for name, c in configs:
        p = count_parameters(c)
        cases.append(Case(name, (c,), (p.total, p.active)))

    def compare(out, case):
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            return f"the result is a {type(out).__name__}, expected a pair (total, active)"
        try:
            got = tuple(int(v) for v in out)
        except (TypeError, ValueError):
            return f"the result {out!r} does not hold two integers"
        c = case.args[0]
        total, active = case.expected
        problems = []
        for what, g_, e in (("total", got[0], total), ("active", got[1], active)):
            if g_ != e:
                diff = g_ - e
                problems.append(f"{what} is {g_:,}, expected {e:,} (off by {diff:+,}{_explain(c, diff, what)})")
        return "; ".join(problems) or None

    return _run("check_count_parameters", fn, cases, [], "nanogptoss.model.params.count_parameters",
                "count one layer part by part (norms, attention with its biases and sinks, router, experts) "
                "and compare with the chapter's breakdown; then the embeddings and the final norm", compare)


def _explain(c, diff: int, what: str) -> str:
    """Name the part of the model a wrong count is off by, when one matches."""
    d, f, E, k, L = c.hidden_size, c.intermediate_size, c.num_experts, c.experts_per_token, c.num_hidden_layers
    expert = d * 2 * f + 2 * f + f * d + d
    known = {
        c.vocab_size * d: "one vocab_size × hidden_size matrix: the input embedding is not active, the unembedding is "
                          "(and is counted once when tied)",
        -c.vocab_size * d: "one vocab_size × hidden_size matrix: the unembedding is active (and is in the total unless tied)",
        L * c.num_attention_heads: "the attention sinks, one per head per layer",
        -L * c.num_attention_heads: "the attention sinks, one per head per layer",
        L * (E - k) * expert: "an active token uses only experts_per_token of the num_experts experts",
        -L * (d * E + E): "the router, d·E + E per layer",
        -d: "the final norm's hidden_size scales",
        -2 * L * d: "the two RMSNorm scales per layer",
    }
    if what == "total":
        known[-L * (E - k) * expert] = "the total counts all num_experts experts, not experts_per_token"
    return f": {known[diff]}" if diff in known else ""


# -- chapter 11: the learning-rate schedule -------------------------------------------

def _schedule_configs():
    from ..training.train import TrainConfig
    return [TrainConfig(lr=3e-3, min_lr=3e-4, warmup_steps=10, max_steps=100),
            TrainConfig(lr=1e-3, min_lr=0.0, warmup_steps=1, max_steps=40),
            TrainConfig(lr=2e-3, min_lr=2e-4, warmup_steps=50, max_steps=500)]


def _curve(fn, cfg):
    values = [fn(step, cfg) for step in range(cfg.max_steps)]
    if any(v is None for v in values):
        return None
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


@_register
def check_lr_schedule(fn: Callable, seed: int = 0) -> CheckResult:
    """fn(step, cfg) -> the learning rate of optimizer step `step` (from 0): linear warmup whose last step
    is the peak, then a cosine down to cfg.min_lr at the last step; compared with
    nanogptoss.training.train.lr_at at every step of a run."""
    from ..training.train import lr_at

    cases = []
    for cfg in _schedule_configs():
        expected = torch.tensor([lr_at(s, cfg) for s in range(cfg.max_steps)], dtype=torch.float64)
        cases.append(Case(f"lr={cfg.lr:g}, min_lr={cfg.min_lr:g}, warmup_steps={cfg.warmup_steps}, "
                          f"max_steps={cfg.max_steps}", (cfg,), expected, atol=1e-12, rtol=1e-9))

    def wrong(schedule):
        return lambda cfg: torch.tensor([schedule(s, cfg) for s in range(cfg.max_steps)], dtype=torch.float64)

    def cosine(step, cfg, floor=None, span=None, after_peak=1):
        floor = cfg.min_lr if floor is None else floor
        span = cfg.max_steps - cfg.warmup_steps if span is None else span
        progress = min(1.0, (step + after_peak - cfg.warmup_steps) / max(1, span))
        return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))

    def warm(step, cfg, then=cosine, plus_one=True):
        if step < cfg.warmup_steps:
            return cfg.lr * (step + plus_one) / cfg.warmup_steps
        return then(step, cfg)

    mistakes = [
        Mistake(wrong(lambda s, c: warm(s, c, plus_one=False)),
                "off by one in the warmup: step 0 already trains, so it gets lr · 1 / warmup_steps, not 0"),
        Mistake(wrong(lambda s, c: warm(s, c, then=lambda s, c: cosine(s, c, after_peak=0))),
                "the cosine starts one step late: the warmup's last step already trained at the peak, so "
                "the first cosine step is below it, and the last step (max_steps − 1) reaches cfg.min_lr"),
        Mistake(wrong(lambda s, c: warm(s, c, then=lambda s, c: cosine(s, c, floor=0.0))),
                "the cosine ends at cfg.min_lr, not at 0"),
        Mistake(wrong(lambda s, c: warm(s, c, then=lambda s, c: cosine(s, c, span=c.max_steps))),
                "the cosine runs over the steps after the warmup, max_steps − warmup_steps of them"),
        Mistake(wrong(lambda s, c: warm(s, c, then=lambda s, c: c.min_lr + (c.lr - c.min_lr) * max(
            0.0, 1 - (s + 1 - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps)))),
                "the decay follows half a cosine, not a straight line"),
    ]
    return _run("check_lr_schedule", fn, cases, mistakes, "nanogptoss.training.train.lr_at",
                "plot your schedule next to lr_at's for the case above and compare the first steps, "
                "the peak and the last step", call=lambda f, cfg: _curve(f, cfg))


# -- chapter 12: sampling ------------------------------------------------------

def _top_p_wrong(logits, p, renormalise=True, keep_crossing=True, keep_first=True):
    probs = logits.float().softmax(-1)
    sorted_p, order = probs.sort(descending=True)
    if keep_crossing:
        keep = sorted_p.cumsum(0) - sorted_p < p
    else:
        keep = sorted_p.cumsum(0) <= p
        keep[0] |= keep_first
    out = torch.zeros_like(probs).scatter(0, order, sorted_p * keep)
    return out / out.sum() if renormalise else out


@_register
def check_top_p(fn: Callable, seed: int = 0) -> bool:
    """fn(logits (V,), p) -> (V,) probabilities: the nucleus (smallest set of most likely tokens
    whose mass reaches p) renormalised, zero elsewhere; the distribution sample_next draws from."""
    g = _gen(seed)
    rows = {"flat": _randn(g, 50, scale=0.3), "peaked": _randn(g, 50, scale=4.0),
            "one sure token": torch.tensor([8.0] + [0.0] * 19), "large vocabulary": _randn(g, 4096, scale=2.0)}
    cases = [Case(f"{name} logits {_shape(z)}, p = {p}", (z, p), next_token_probs(z, top_p=p), atol=1e-6, rtol=1e-5)
             for name, z in rows.items() for p in (0.05, 0.5, 0.8, 0.95, 1.0)]

    def compare(out, case):
        problem = _tensor_problem(out, case.expected, case.atol, case.rtol)
        if problem is None or not isinstance(out, torch.Tensor) or out.shape != case.expected.shape:
            return problem
        kept, want = int((out > 0).sum()), int((case.expected > 0).sum())
        return f"{kept} tokens kept, expected {want} ({problem})" if kept != want else problem

    mistakes = [
        Mistake(lambda z, p: _top_p_wrong(z, p, renormalise=False),
                "renormalise: divide the kept probabilities by their sum so they add up to 1"),
        Mistake(lambda z, p: _top_p_wrong(z, p, keep_crossing=False),
                "one token too few: keeping the tokens whose cumulative mass is <= p drops the one that "
                "crosses p; keep a token while the mass of the tokens ranked *before* it is below p "
                "(the token that crosses p is kept)"),
        Mistake(lambda z, p: _top_p_wrong(z, p, keep_crossing=False, keep_first=False),
                "keeping the tokens whose cumulative mass is <= p keeps none when the most likely token "
                "alone is above p (0 / 0 = NaN) and drops the one that crosses p; keep a token while the "
                "mass of the tokens ranked *before* it is below p (the token that crosses p is kept)"),
    ]
    return _run("check_top_p", fn, cases, mistakes, "nanogptoss.next_token_probs (what sample_next draws from)",
                "look at which tokens you keep on the case above: sort by probability, decide from the "
                "cumulative mass, and make the kept probabilities a distribution", compare)


# -- the library's answers, with each exercise's signature ------------------------------

def _my_router_ref(x, W, b, k):
    logits = x @ W.T + b
    return (*_router_ref(logits, k), logits)


def _top_p_ref(logits, p):
    return next_token_probs(logits, top_p=p)


def _count_ref(config):
    p = count_parameters(config)
    return p.total, p.active


def _lr_ref(step, cfg):
    from ..training.train import lr_at
    return lr_at(step, cfg)


# name -> (the checker it answers, the library's version). Checker names are the exercises;
# the other names are the chapters' own from-scratch copies that a handout replaces.
REFERENCES.update({
    "check_bits_per_byte": _bpb_ref,
    "check_gpt2_parameters": lambda config: count_parameters(config).total,
    "check_rmsnorm": _rmsnorm_ref,
    "check_rope": _rope_ref,
    "check_repeat_kv": repeat_kv,
    "check_sliding_window_mask": _mask_ref,
    "check_sink_attention": _sink_ref,
    "check_swiglu": swiglu,
    "check_router": _router_ref,
    "check_load_balancing_loss": load_balancing_loss,
    "check_moe": _moe_ref,
    "check_expert_counts": expert_counts,
    "check_count_parameters": _count_ref,
    "check_lr_schedule": _lr_ref,
    "check_top_p": _top_p_ref,
    "next_token_probs": next_token_probs,  # what chapter 12's filtered_probs computes, all knobs
    "my_router": _my_router_ref,  # chapter 8's router from the hidden state: (weights, indices, logits)
})
