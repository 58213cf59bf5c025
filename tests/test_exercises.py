"""The exercise checkers: each passes the library's own function, fails the untouched stub in
one clear line, and fails the typical mistakes with the hint that names them; every
chapter's worked solution passes its checker. The grader is tested in test_grader.py,
the handouts in test_handout.py.

The planted-wrong implementations are written here from scratch, independently of
the checkers' own diagnoses, so a checker that stopped catching a mistake fails.
"""

import ast
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nanogptoss import RMSNorm, RotaryEmbedding, apply_rotary_emb, swiglu
from nanogptoss.book import exercises as ex
from nanogptoss.book.page import WIDTH, unfold
from nanogptoss.model.attention import attention_mask, attention_reference, repeat_kv
from nanogptoss.model.moe import Experts, moe_reference
from nanogptoss.model.generate import next_token_probs
from nanogptoss.model.params import count_parameters
from nanogptoss.model.router import RouterOutput, expert_counts, load_balancing_loss


# -- the library's own functions, wrapped to the exercises' signatures ----------

def lib_rmsnorm(x, weight, eps):
    norm = RMSNorm(x.shape[-1], eps)
    norm.weight.data.copy_(weight)
    return norm(x)


def lib_rope(x, positions, theta):
    return apply_rotary_emb(x, *RotaryEmbedding(x.shape[-1], theta)(positions))


def lib_mask(seq_len, window):
    pos = torch.arange(seq_len)
    return attention_mask(pos, pos, window)


def lib_sink_attention(q, k, v, sinks):
    return attention_reference(q, k, v, lib_mask(q.shape[2], None), sinks)


def lib_router(logits, k):
    top, idx = logits.topk(k, dim=-1)
    return top.softmax(-1), idx


def lib_moe(x, weights, indices, w1, b1, w2, b2):
    experts = Experts(w1.shape[0], w1.shape[1], w1.shape[2] // 2)
    for name, value in zip(("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias"), (w1, b1, w2, b2)):
        getattr(experts, name).data.copy_(value)
    return moe_reference(x, experts, RouterOutput(weights, indices, None))


def lib_count(config):
    p = count_parameters(config)
    return p.total, p.active


def lib_lr(step, cfg):
    from nanogptoss.training.train import lr_at
    return lr_at(step, cfg)


LIBRARY = {
    "check_bits_per_byte": lambda loss, n_tokens, n_bytes: loss * n_tokens / n_bytes / math.log(2),
    "check_gpt2_parameters": lambda config: count_parameters(config).total,
    "check_rmsnorm": lib_rmsnorm,
    "check_rope": lib_rope,
    "check_repeat_kv": repeat_kv,
    "check_sliding_window_mask": lib_mask,
    "check_sink_attention": lib_sink_attention,
    "check_swiglu": swiglu,
    "check_router": lib_router,
    "check_load_balancing_loss": load_balancing_loss,
    "check_moe": lib_moe,
    "check_expert_counts": expert_counts,
    "check_count_parameters": lib_count,
    "check_lr_schedule": lib_lr,
    "check_top_p": lambda logits, p: next_token_probs(logits, top_p=p),
}


def test_every_checker_has_a_library_reference_here():
    assert set(LIBRARY) == set(ex.CHECKERS)
    for name in ("check_rmsnorm", "check_rope", "check_repeat_kv", "check_sliding_window_mask",
                 "check_sink_attention", "check_swiglu", "check_router", "check_load_balancing_loss",
                 "check_moe"):
        assert name in ex.CHECKERS


@pytest.mark.parametrize("name", list(LIBRARY))
def test_checker_passes_the_library(name, capsys):
    result = ex.CHECKERS[name](LIBRARY[name])
    assert result.passed is True and bool(result) is True and result.name == name
    out = capsys.readouterr().out
    assert out.startswith(f"PASS: {name}:") and "FAIL" not in out and unfold(out).count("\n") == 1
    assert result.message in unfold(out)


@pytest.mark.parametrize("name", list(LIBRARY))
def test_the_untouched_stub_fails_in_one_clear_line(name, capsys):
    def stub(*args):
        ...  # your code here
    result = ex.CHECKERS[name](stub)
    assert not result
    out = capsys.readouterr().out
    assert unfold(out).count("\n") == 1 and out.startswith(f"FAIL: {name}: your function returned None"), out
    assert "Traceback" not in out and result.message in unfold(out)
    assert all(len(line) <= WIDTH for line in out.splitlines()), f"not folded to the page's {WIDTH} characters"


def test_a_check_result_shows_nothing_in_jupyter_but_says_what_it_is():
    result = ex.CheckResult("check_rope", False, "case x: wrong")
    assert repr(result) == "<check_rope: FAIL>" and not result
    assert result._ipython_display_() is None  # IPython calls it instead of printing a repr


def test_a_function_that_calls_the_handouts_stand_in_fails(capsys):
    stand_in = ex.reference("check_swiglu")
    assert not ex.check_swiglu(lambda x, a, l: stand_in(x, a, l))
    assert "reference('check_swiglu')" in unfold(capsys.readouterr().out)
    assert ex.check_swiglu(swiglu)  # the stand-in's flag does not leak into the next check
    with pytest.raises(ValueError, match="no exercise reference"):
        ex.reference("check_nothing")


def test_every_reference_has_its_exercises_signature(capsys):
    for name, checker in ex.CHECKERS.items():
        assert checker(ex.REFERENCES[name]), capsys.readouterr().out


@pytest.mark.parametrize("seed", [1, 2])
def test_checkers_pass_on_other_draws(seed, capsys):
    for name, fn in LIBRARY.items():
        assert ex.CHECKERS[name](fn, seed=seed), capsys.readouterr().out


# -- planted mistakes -------------------------------------------------------------

def rms(x, eps):
    return torch.sqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)


def rope_angles(positions, h, theta, exponent=2):
    inv = theta ** (-exponent * torch.arange(h // 2).float() / h)
    return positions.float()[:, None] * inv


def rope_halves(x, positions, theta, sign=1, exponent=2):
    a = rope_angles(positions, x.shape[-1], theta, exponent)
    x1, x2 = x.float()[..., : x.shape[-1] // 2], x.float()[..., x.shape[-1] // 2:]
    c, s = a.cos(), sign * a.sin()
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], -1).to(x.dtype)


def rope_pairs(x, positions, theta):
    a = rope_angles(positions, x.shape[-1], theta)
    xe, xo = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.empty_like(x.float())
    out[..., 0::2] = xe * a.cos() - xo * a.sin()
    out[..., 1::2] = xe * a.sin() + xo * a.cos()
    return out.to(x.dtype)


def causal(T):
    return torch.tril(torch.ones(T, T, dtype=torch.bool))


def attention(q, k, v, sinks=None, mask=True, scale=True):
    T, h = q.shape[-2], q.shape[-1]
    s = q @ k.transpose(-1, -2)
    if scale:
        s = s / math.sqrt(h)
    if mask:
        s = s.masked_fill(~causal(T), -math.inf)
    if sinks is None:
        return s.softmax(-1) @ v
    # the sink written as an extra term of the softmax's denominator
    m = torch.maximum(s.amax(-1, keepdim=True), sinks[None, :, None, None])
    e = (s - m).exp()
    denom = e.sum(-1, keepdim=True) + (sinks[None, :, None, None] - m).exp()
    return (e / denom) @ v


def glu(x, alpha, limit, split="interleaved", plus=1.0, clamp_gate=(None, "limit"), clamp_up=True):
    if split == "halves":
        g, u = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    elif split == "swapped":
        u, g = x[..., 0::2], x[..., 1::2]
    else:
        g, u = x[..., 0::2], x[..., 1::2]
    lo, hi = clamp_gate
    g = torch.clamp(g, min=None if lo is None else -limit, max=None if hi is None else limit)
    if clamp_up:
        u = torch.clamp(u, -limit, limit)
    return g * torch.sigmoid(alpha * g) * (u + plus)


def moe_linear(x, weights, indices, w1, b1, w2, b2, batched=False):
    """The experts' weights read as nn.Linear's (out, in): F.linear multiplies by their transpose."""
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for j in range(indices.shape[1]):
            e = int(indices[n, j])
            xs = x[n : n + 1] if batched else x[n]
            y = F.linear(swiglu(F.linear(xs, w1[e], b1[e])), w2[e], b2[e])
            out[n] += weights[n, j] * y.reshape(-1)
    return out


def moe_loop(x, weights, indices, w1, b1, w2, b2, use_weights=True, halves=False, silu=False):
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for j in range(indices.shape[1]):
            e = int(indices[n, j])
            a = x[n] @ w1[e] + b1[e]
            if silu:  # the usual SwiGLU of Llama & co., not gpt-oss's
                g, u = (a[: a.shape[-1] // 2], a[a.shape[-1] // 2 :]) if halves else (a[0::2], a[1::2])
                hid = F.silu(g) * u
            elif halves:
                f = a.shape[-1] // 2
                g, u = a[:f].clamp(max=7.0), a[f:].clamp(-7.0, 7.0)
                hid = g * torch.sigmoid(1.702 * g) * (u + 1)
            else:
                hid = swiglu(a)
            y = hid @ w2[e] + b2[e]
            out[n] += (weights[n, j] if use_weights else 1.0) * y
    return out


def lbl(logits, E, k, factor=True, per_slot=False, first_only=False):
    p = logits.softmax(-1)
    chosen = p.topk(1 if first_only else k, -1).indices
    counts = torch.zeros(E)
    for e in chosen.flatten().tolist():
        counts[e] += 1
    frac = counts / (logits.shape[0] * (k if per_slot else 1))
    return (E if factor else 1) * (frac * p.mean(0)).sum()


def bpb(loss, n_tokens, n_bytes, ln2=True, per_token=False):
    bits = loss / math.log(2) if ln2 else loss
    return bits if per_token else bits * n_tokens / n_bytes


def gpt2_count(c, tied=True, positions=True, ln_bias=True):
    V, T, L, d = c.vocab_size, c.max_position_embeddings, c.num_hidden_layers, c.hidden_size
    block = (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d) + 2 * (2 if ln_bias else 1) * d
    return V * d * (1 if tied else 2) + (T * d if positions else 0) + L * block + (2 if ln_bias else 1) * d


def schedule(step, cfg, plus_one=True, floor=None, linear=False):
    floor = cfg.min_lr if floor is None else floor
    if step < cfg.warmup_steps:
        return cfg.lr * (step + (1 if plus_one else 0)) / cfg.warmup_steps
    t = min(1.0, (step + 1 - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    shape = 1 - t if linear else 0.5 * (1 + math.cos(math.pi * t))
    return floor + (cfg.lr - floor) * shape


def lr_peak_twice(step, cfg):
    """The schedule before the fix: the cosine counted from 0 after a warmup counted from 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def fp16_rmsnorm(x, w, eps):
    """RMSNorm in the input's own dtype, without the float32 upcast: chapter 2's warning."""
    return w.to(x.dtype) * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


PLANTED = [
    # (checker, wrong function, a phrase the hint must contain)
    ("check_bits_per_byte", lambda l, t, b: bpb(l, t, b, ln2=False), "ln 2"),
    ("check_bits_per_byte", lambda l, t, b: bpb(l, t, b, per_token=True), "bits per token"),
    ("check_bits_per_byte", lambda l, t, b: bpb(l, b, t), "n_tokens / n_bytes"),
    ("check_gpt2_parameters", lambda c: gpt2_count(c, tied=False), "tied"),
    ("check_gpt2_parameters", lambda c: gpt2_count(c, positions=False), "position"),
    ("check_gpt2_parameters", lambda c: gpt2_count(c, ln_bias=False), "LayerNorm"),
    ("check_rmsnorm", fp16_rmsnorm, "float32"),
    ("check_rmsnorm", lambda x, w, eps: (w * x.float() / (rms(x, 0) + eps)).to(x.dtype), "inside the square root"),
    ("check_rmsnorm", lambda x, w, eps: (x.float() / rms(x, eps)).to(x.dtype), "weight"),
    ("check_rmsnorm", lambda x, w, eps: (w * (x - x.mean(-1, keepdim=True)) / rms(x - x.mean(-1, keepdim=True), eps)
                                         ).to(x.dtype), "mean"),
    ("check_rmsnorm", lambda x, w, eps: w * x.float() / rms(x, eps), "dtype"),
    ("check_rope", rope_pairs, "halves"),
    ("check_rope", lambda x, p, t: rope_halves(x, p, t, sign=-1), "other way"),
    ("check_rope", lambda x, p, t: rope_halves(x, p, t, exponent=1), "frequencies"),
    ("check_rope", lambda x, p, t: rope_halves(x, torch.arange(len(p)), t), "positions"),
    ("check_rope", lambda x, p, t: x, "direction of the rotation"),  # no rotation: only the fallback hint
    ("check_repeat_kv", lambda k, n: torch.cat([k] * n, dim=1), "repeat_interleave"),
    ("check_repeat_kv", lambda k, n: k[:, :, None].expand(-1, -1, n, -1, -1).flatten(1, 2)[:, :-1], "shape"),
    ("check_sliding_window_mask", lambda T, W: torch.tril(torch.ones(T, T, dtype=torch.bool))
        & (True if W is None else ~torch.tril(torch.ones(T, T, dtype=torch.bool), -W - 1)), "off by one"),
    ("check_sliding_window_mask", lambda T, W: causal(T).T, "lower triangle"),
    ("check_sliding_window_mask", lambda T, W: causal(T), "window"),
    ("check_sliding_window_mask", lambda T, W: causal(T).int(), "torch.bool"),
    ("check_sliding_window_mask",
     lambda T, W: (torch.arange(T)[:, None] - torch.arange(T)).abs() < (W or T), "causal"),
    ("check_sink_attention", lambda q, k, v, s: attention(q, k, v), "sink"),
    ("check_sink_attention", lambda q, k, v, s: attention(q, k, v, s, mask=False), "future"),
    ("check_sink_attention", lambda q, k, v, s: attention(q, k, v, s, scale=False), "sqrt"),
    ("check_swiglu", lambda x, a, l: glu(x, a, l, split="halves"), "interleaved"),
    ("check_swiglu", lambda x, a, l: glu(x, a, l, split="swapped"), "even columns"),
    ("check_swiglu", lambda x, a, l: glu(x, a, l, plus=0.0), "up + 1"),
    ("check_swiglu", lambda x, a, l: glu(x, a, l, clamp_gate=(None, None), clamp_up=False), "clamp"),
    ("check_swiglu", lambda x, a, l: glu(x, a, l, clamp_gate=("limit", "limit")), "from above only"),
    ("check_swiglu", lambda x, a, l: glu(x, 1.0, l), "alpha"),
    ("check_swiglu", lambda x, a, l: F.silu(x[..., 0::2]) * x[..., 1::2], "Hint"),
    ("check_router", lambda z, k: z.softmax(-1).topk(k, -1), "not over all experts"),
    ("check_router", lambda z, k: (z.topk(k, -1).values, z.topk(k, -1).indices), "softmax"),
    ("check_router", lambda z, k: (z.topk(k, -1, largest=False).values.softmax(-1),
                                   z.topk(k, -1, largest=False).indices), "largest"),
    ("check_router", lambda z, k: lib_router(z, k)[0], "pair"),
    ("check_load_balancing_loss", lambda z, E, k: lbl(z, E, k, factor=False), "number of experts"),
    ("check_load_balancing_loss", lambda z, E, k: lbl(z, E, k, per_slot=True), "not N·k"),
    ("check_load_balancing_loss", lambda z, E, k: lbl(z, E, k, first_only=True), "first choice"),
    ("check_load_balancing_loss", lambda z, E, k: lbl(z, E, k)[None], "scalar"),
    ("check_moe", lambda *a: moe_loop(*a, use_weights=False), "routing weight"),
    ("check_moe", lambda *a: moe_loop(*a, halves=True), "interleaved"),
    ("check_moe", lambda x, w, i, w1, b1, w2, b2: moe_loop(x, w, i, w1, 0 * b1, w2, 0 * b2), "biases"),
    ("check_moe", lambda *a: moe_loop(*a, silu=True), "not plain SiLU"),
    ("check_moe", lambda *a: moe_loop(*a, halves=True, silu=True), "not plain SiLU"),
    ("check_moe", moe_linear, "F.linear"),
    ("check_moe", lambda x, w, i, w1, b1, w2, b2: moe_linear(x, w, i, w1, b1, w2, b2, batched=True), "F.linear"),
    ("check_expert_counts", lambda i, E: torch.zeros(E).index_add_(0, i.flatten(), torch.ones(i.numel())),
     "integer dtype"),
    ("check_expert_counts", lambda i, E: torch.bincount(i.flatten()), "minlength"),
    ("check_expert_counts", lambda i, E: torch.bincount(i[:, 0], minlength=E), "all k"),
    ("check_count_parameters", lambda c: (lib_count(c)[0], lib_count(c)[1] + c.vocab_size * c.hidden_size),
     "input embedding is not active"),
    ("check_count_parameters", lambda c: (lib_count(c)[0] - c.num_hidden_layers * c.num_attention_heads, lib_count(c)[1]), "sinks"),
    ("check_count_parameters", lambda c: (lib_count(c)[0] - c.num_hidden_layers * (c.num_experts - c.experts_per_token) * (
        3 * c.hidden_size * c.intermediate_size + 2 * c.intermediate_size + c.hidden_size), lib_count(c)[1]), "all num_experts"),
    ("check_top_p", lambda z, p: nucleus(z, p, renormalise=False), "renormalise"),
    ("check_top_p", lambda z, p: nucleus(z, p, keep_crossing=False), "crosses p is kept"),
    ("check_top_p", lambda z, p: nucleus(z, p, ascending=True), "Hint"),
    ("check_top_p", lambda z, p: nucleus(z, p, keep_crossing=False, keep_first=False), "cumulative mass is <= p"),
    ("check_lr_schedule", lambda s, c: schedule(s, c, plus_one=False), "off by one"),
    ("check_lr_schedule", lambda s, c: schedule(s, c, floor=0.0), "min_lr"),
    ("check_lr_schedule", lambda s, c: schedule(s, c, linear=True), "cosine"),
    ("check_lr_schedule", lambda s, c: lr_peak_twice(s, c), "one step late"),
]

# the one mistake each chapter warns about, caught with the hint that names it
CHAPTER_WARNINGS = {
    "check_bits_per_byte": "ln 2", "check_gpt2_parameters": "tied", "check_rmsnorm": "float32",
    "check_rope": "halves", "check_repeat_kv": "repeat_interleave", "check_sliding_window_mask": "off by one",
    "check_sink_attention": "sink", "check_swiglu": "interleaved", "check_router": "not over all experts",
    "check_load_balancing_loss": "not N·k", "check_moe": "routing weight", "check_expert_counts": "minlength",
    "check_count_parameters": "input embedding is not active", "check_lr_schedule": "off by one",
    "check_top_p": "crosses p is kept",
}


def nucleus(logits, p, renormalise=True, keep_crossing=True, ascending=False, keep_first=True):
    probs = logits.float().softmax(-1)
    ranked, order = probs.sort(descending=not ascending)
    mass = ranked.cumsum(0)
    keep = (mass - ranked < p) if keep_crossing else torch.cat([torch.ones(1, dtype=torch.bool), mass[1:] <= p])
    if not keep_first:
        keep = mass <= p  # a plain `cumsum <= p`: nothing at all when the top token alone is above p
    out = torch.zeros_like(probs).scatter(0, order, ranked * keep)
    return out / out.sum() if renormalise else out


@pytest.mark.parametrize("name,wrong,phrase", PLANTED, ids=[f"{p[0]}-{i}" for i, p in enumerate(PLANTED)])
def test_checker_fails_a_planted_mistake_with_its_hint(name, wrong, phrase, capsys):
    assert ex.CHECKERS[name](wrong).passed is False
    printed = capsys.readouterr().out
    assert all(len(line) <= WIDTH for line in printed.splitlines()), f"not folded to {WIDTH} characters: {printed}"
    out = unfold(printed)
    assert out.startswith(f"FAIL: {name}: case ") and "Hint:" in out and out.count("\n") == 1
    assert phrase in out, out


def test_every_checker_has_planted_mistakes():
    assert {p[0] for p in PLANTED} == set(ex.CHECKERS) == set(CHAPTER_WARNINGS)
    for name, phrase in CHAPTER_WARNINGS.items():
        assert (name, phrase) in {(p[0], p[2]) for p in PLANTED}, f"{name}: its chapter's mistake is not planted"


def test_rmsnorm_in_float16_fails_on_the_chapters_300(capsys):
    """The chapter's example: 300² overflows float16, so without the upcast the norm returns 0, not 1."""
    x = torch.full((1, 8), 300.0, dtype=torch.float16)
    assert fp16_rmsnorm(x, torch.ones(8), 1e-5).abs().max() == 0
    assert lib_rmsnorm(x, torch.ones(8), 1e-5).float().allclose(torch.ones(1, 8))
    assert not ex.check_rmsnorm(fp16_rmsnorm)
    out = unfold(capsys.readouterr().out)
    assert "float16" in out and "65504" in out, out


# fallback hints point at what to compare; they must not contain the code of a solution
SOLUTION_CODE = re.compile(r"torch\.\w+\(|\.\w+\(|repeat_interleave|bincount|topk|rsqrt|chunk|cumsum|=\s")


@pytest.mark.parametrize("name", list(LIBRARY))
def test_the_fallback_hint_points_without_solving(name, capsys):
    ex.CHECKERS[name](LIBRARY[name])
    hint = ex.FALLBACK_HINTS[name]
    assert len(hint) > 40 and not SOLUTION_CODE.search(hint), f"{name}: the fallback hint gives code away: {hint}"


# -- every chapter's worked solution passes its checker; the stub fails ----------------------

CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FENCE = re.compile(r"```python\n(.*?)\n```", re.S)


def chapter_exercises(path):
    """(checker, function name, stub source, solution source, the chapter's imports) per exercise."""
    cells = json.loads(path.read_text())["cells"]
    text = ["".join(c["source"]) for c in cells]
    imports = "\n".join(ast.get_source_segment(t, node) for c, t in zip(cells, text) if c["cell_type"] == "code"
                        for node in ast.parse(t).body if isinstance(node, (ast.Import, ast.ImportFrom)))
    found = []
    for i, (c, t) in enumerate(zip(cells, text)):
        m = re.search(r"^(check_\w+)\((\w+)\)", t, re.M)
        if c["cell_type"] != "code" or not m:
            continue
        stub, solution = text[i - 1], text[i + 1]
        assert "# your code here" in stub, f"{path.name}: the cell before {m.group(1)}(...) is not the stub"
        assert "solution" in cells[i + 1]["metadata"].get("tags", []), f"{path.name}: no solution after the check"
        found.append((m.group(1), m.group(2), stub, FENCE.search(solution).group(1), imports))
    return found


def run_exercise(source, name, imports):
    namespace = {}
    exec(imports, namespace)
    exec(source, namespace)
    return namespace[name]


EXERCISES = [(p.stem, *e) for p in CHAPTERS for e in chapter_exercises(p)]


def test_the_exercises_are_found_in_every_chapter():
    assert {e[0][:2] for e in EXERCISES} == {f"{n:02d}" for n in range(13)}
    assert {e[1] for e in EXERCISES} == set(ex.CHECKERS)


@pytest.mark.parametrize("chapter,checker,name,stub,solution,imports", EXERCISES,
                         ids=[f"{e[0]}-{e[1]}" for e in EXERCISES])
def test_the_worked_solution_passes_and_the_stub_fails(chapter, checker, name, stub, solution, imports, capsys):
    assert re.search(rf"^def {name}\(", solution, re.M), f"{chapter}: the solution must define {name}"
    assert ex.CHECKERS[checker](run_exercise(solution, name, imports)), capsys.readouterr().out
    assert not ex.CHECKERS[checker](run_exercise(stub, name, imports))
    assert "returned None" in unfold(capsys.readouterr().out).splitlines()[-1]


def test_a_folded_line_is_read_whole_by_the_grader(capsys):
    """The checkers fold their line to the page's width; the grader joins it back."""
    from nanogptoss.book.grading import _lines

    result = ex.check_moe(lambda *a: moe_loop(*a, silu=True))
    printed = capsys.readouterr().out
    assert printed.count("\n") > 1, "the hint should need folding"
    assert _lines(printed + "noise\n") == {"check_moe": ("FAIL", result.message)}
