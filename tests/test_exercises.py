"""The exercise checkers: each passes the library's own function and fails the typical
mistakes with the hint that names them; the bulk grader runs real notebooks.

The planted-wrong implementations are written here from scratch, independently of
the checkers' own diagnoses, so a checker that stopped catching a mistake fails.
"""

import csv
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nanogptoss import RMSNorm, RotaryEmbedding, apply_rotary_emb, swiglu
from nanogptoss.book import exercises as ex
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


LIBRARY = {
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
    assert ex.CHECKERS[name](LIBRARY[name]) is True
    out = capsys.readouterr().out
    assert out.startswith(f"PASS: {name}:") and "FAIL" not in out


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


def moe_loop(x, weights, indices, w1, b1, w2, b2, use_weights=True, halves=False):
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        for j in range(indices.shape[1]):
            e = int(indices[n, j])
            a = x[n] @ w1[e] + b1[e]
            if halves:
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


PLANTED = [
    # (checker, wrong function, a phrase the hint must contain)
    ("check_rmsnorm", lambda x, w, eps: (w * x.float() / (rms(x, 0) + eps)).to(x.dtype), "inside the square root"),
    ("check_rmsnorm", lambda x, w, eps: (x.float() / rms(x, eps)).to(x.dtype), "weight"),
    ("check_rmsnorm", lambda x, w, eps: (w * (x - x.mean(-1, keepdim=True)) / rms(x - x.mean(-1, keepdim=True), eps)
                                         ).to(x.dtype), "mean"),
    ("check_rmsnorm", lambda x, w, eps: w * x.float() / rms(x, eps), "dtype"),
    ("check_rope", rope_pairs, "halves"),
    ("check_rope", lambda x, p, t: rope_halves(x, p, t, sign=-1), "other way"),
    ("check_rope", lambda x, p, t: rope_halves(x, p, t, exponent=1), "frequencies"),
    ("check_rope", lambda x, p, t: rope_halves(x, torch.arange(len(p)), t), "positions"),
    ("check_rope", lambda x, p, t: x, "angle"),  # no rotation: only the generic hint
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
]


def nucleus(logits, p, renormalise=True, keep_crossing=True, ascending=False):
    probs = logits.float().softmax(-1)
    ranked, order = probs.sort(descending=not ascending)
    mass = ranked.cumsum(0)
    keep = (mass - ranked < p) if keep_crossing else torch.cat([torch.ones(1, dtype=torch.bool), mass[1:] <= p])
    out = torch.zeros_like(probs).scatter(0, order, ranked * keep)
    return out / out.sum() if renormalise else out


@pytest.mark.parametrize("name,wrong,phrase", PLANTED, ids=[f"{p[0]}-{i}" for i, p in enumerate(PLANTED)])
def test_checker_fails_a_planted_mistake_with_its_hint(name, wrong, phrase, capsys):
    assert ex.CHECKERS[name](wrong) is False
    out = capsys.readouterr().out
    assert out.startswith(f"FAIL: {name}: case ") and "Hint:" in out
    assert phrase in out, out


def test_every_checker_has_planted_mistakes():
    assert {p[0] for p in PLANTED} == set(ex.CHECKERS)


def test_an_exception_in_the_student_function_is_a_reported_fail(capsys):
    def broken(x, alpha, limit):
        raise RuntimeError("shape mismatch somewhere")
    assert ex.check_swiglu(broken) is False
    out = capsys.readouterr().out
    assert "FAIL: check_swiglu" in out and "RuntimeError: shape mismatch somewhere" in out


def test_a_non_function_is_a_reported_fail(capsys):
    assert ex.check_router(torch.zeros(3)) is False
    assert "pass the function itself" in capsys.readouterr().out


def test_the_student_cannot_change_the_reference_in_place(capsys):
    def in_place(gate_up, alpha, limit):
        out = swiglu(gate_up, alpha, limit)
        gate_up.zero_()
        return out
    assert ex.check_swiglu(in_place) is True


def test_parse_results_keeps_the_last_line_per_checker():
    text = "PASS: check_rope: ok\nnoise\nFAIL: check_swiglu: x\n  PASS: check_swiglu: fixed\nFAIL: other\n"
    assert ex.parse_results(text) == {"check_rope": "PASS", "check_swiglu": "PASS"}


def test_grader_rejects_a_folder_without_notebooks(tmp_path, capsys):
    assert ex.main(["grade", str(tmp_path)]) == 2
    assert "no .ipynb files" in capsys.readouterr().err
    assert ex.main(["grade", str(tmp_path / "missing")]) == 2


# -- the bulk grader on real notebooks ------------------------------------------

def write_notebook(path, *sources):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def test_grade_folder_of_student_notebooks(tmp_path):
    header = "import torch\nfrom nanogptoss.book.exercises import check_swiglu, check_router"
    write_notebook(tmp_path / "alice.ipynb", header,
                   "def my_swiglu(x, alpha, limit):\n"
                   "    g, u = x[..., ::2].clamp(max=limit), x[..., 1::2].clamp(-limit, limit)\n"
                   "    return g * torch.sigmoid(alpha * g) * (u + 1)\ncheck_swiglu(my_swiglu)",
                   "def my_router(z, k):\n    v, i = z.topk(k, -1)\n    return v.softmax(-1), i\n"
                   "check_router(my_router)")
    write_notebook(tmp_path / "bob.ipynb", header,
                   "def my_swiglu(x, alpha, limit):\n    g, u = x.chunk(2, -1)\n"
                   "    return g * torch.sigmoid(alpha * g) * (u + 1)\ncheck_swiglu(my_swiglu)",
                   "undefined_name + 1",  # an error in the middle does not stop the grading
                   "check_router(lambda z, k: z.softmax(-1).topk(k, -1))")
    write_notebook(tmp_path / "carol.ipynb", header, "import time\ntime.sleep(60)", "check_swiglu(None)")
    (tmp_path / "notes.txt").write_text("not a notebook")

    results = ex.grade_folder(tmp_path, timeout=15)
    by_name = {r.notebook: r for r in results}
    assert list(by_name) == ["alice.ipynb", "bob.ipynb", "carol.ipynb"]
    assert by_name["alice.ipynb"].status == "ok"
    assert by_name["alice.ipynb"].checks == {"check_swiglu": "PASS", "check_router": "PASS"}
    assert by_name["bob.ipynb"].status.startswith("error") and "NameError" in by_name["bob.ipynb"].status
    assert by_name["bob.ipynb"].checks == {"check_swiglu": "FAIL", "check_router": "FAIL"}
    assert by_name["carol.ipynb"].status.startswith("timeout") and by_name["carol.ipynb"].checks == {}

    with open(tmp_path / "grades.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["notebook"] for r in rows] == ["alice.ipynb", "bob.ipynb", "carol.ipynb"]
    assert rows[0]["passed"] == "2/2" and rows[1]["passed"] == "0/2" and rows[2]["passed"] == "0/0"
    assert rows[0]["check_swiglu"] == "PASS" and rows[1]["check_swiglu"] == "FAIL" and rows[2]["check_swiglu"] == ""
    md = (tmp_path / "grades.md").read_text()
    assert md.startswith("| notebook | status | passed | check_swiglu | check_router |") and "alice.ipynb" in md


# -- handing out the assignments -------------------------------------------------

def test_strip_removes_solutions_and_outputs(tmp_path, capsys):
    import nbformat
    v4 = nbformat.v4
    cells = [
        v4.new_markdown_cell("# Chapter"),
        v4.new_code_cell("plot()", metadata={"tags": ["hide-input"]}),  # a collapsed plot: not a solution
        v4.new_code_cell("def student_f(x):\n    ...  # your code here"),
        v4.new_markdown_cell("The worked solution (click to show)."),
        v4.new_code_cell("def student_f(x):\n    return x", metadata={"tags": ["hide-input"]}),
        v4.new_code_cell("check_swiglu(student_f)", outputs=[v4.new_output("stream", text="PASS: check_swiglu: ok\n")]),
        v4.new_code_cell("secret = 1", metadata={"tags": ["solution"]}),
    ]
    nb = v4.new_notebook(cells=cells)
    src = tmp_path / "chapters"
    src.mkdir()
    nbformat.write(nb, str(src / "07_x.ipynb"))
    assert ex.main(["strip", str(src), "--out", str(tmp_path / "student")]) == 0
    assert "2 solution(s) removed" in capsys.readouterr().out
    student = nbformat.read(str(tmp_path / "student" / "07_x.ipynb"), as_version=4)
    sources = [c.source for c in student.cells]
    assert sources == ["# Chapter", "plot()", "def student_f(x):\n    ...  # your code here", "check_swiglu(student_f)"]
    assert all(c.outputs == [] for c in student.cells if c.cell_type == "code")
    # the chapters themselves are never overwritten
    assert ex.main(["strip", str(src), "--out", str(src)]) == 2
    assert "overwrite" in capsys.readouterr().err


CHAPTERS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_chapters_with_exercises_are_found():
    names = {p.stem for p in CHAPTERS}
    assert {"07_swiglu", "08_router", "09_moe", "10_assembling_gptoss"} <= names


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_checked_exercise_has_a_solution_that_strip_removes(path):
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    checks = [c for c in nb.cells if c.cell_type == "code" and re.search(r"^check_\w+\(", c.source, re.M)]
    stripped, n = ex.strip_solutions(nb)
    assert n == len(checks), f"{path.name}: {len(checks)} checked exercises but {n} solutions found"
    assert not any("solution" in c.metadata.get("tags", []) for c in stripped.cells)
