"""The browser's model and tokenizer (book/js/model.js, book/js/bpe.js) against PyTorch and tiktoken.

Node.js runs the JavaScript on small random models that the test exports into tmp_path with
`nanogptoss.book.export`; nothing is committed but the code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogptoss.book.export import export_model
from nanogptoss.config import GPT2Config, GPTOSSConfig
from nanogptoss.model.generate import next_token_probs, sample_from_probs
from nanogptoss.model.transformer import GPT

JS = Path(__file__).resolve().parents[1] / "nanogptoss" / "book" / "js"
WINDOW = 8
PROMPT_LEN = 3 * WINDOW + 5  # the ring buffer wraps three times


def run_node(tmp_path: Path, body: str) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("testing the browser's model needs Node.js (`apt-get install nodejs`)")
    script = tmp_path / "run.mjs"
    script.write_text(f"import * as M from {json.dumps((JS / 'model.js').as_uri())};\n"
                      f"import * as B from {json.dumps((JS / 'bpe.js').as_uri())};\n"
                      "import fs from 'node:fs';\n"
                      "const load = (p) => new M.Model(new Uint8Array(fs.readFileSync(p)).buffer);\n" + body)
    done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def random_model(config, seed: int = 0) -> GPT:
    """Every parameter random (biases, sinks and norm scales included), so each one is checked."""
    torch.manual_seed(seed)
    model = GPT(config.replace(attn_impl="reference", moe_impl="reference")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if name.endswith("sinks") else 0.15
            p.copy_(torch.randn_like(p) * scale + (1.0 if "norm" in name else 0.0))
    return model


SMALL = dict(vocab_size=97, max_position_embeddings=64, num_hidden_layers=4, hidden_size=32)
CONFIGS = {
    "gptoss": GPTOSSConfig(**SMALL, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                           sliding_window=WINDOW, num_experts=4, experts_per_token=2, intermediate_size=24,
                           swiglu_limit=0.6, rope_theta=10_000.0),  # a low limit: the clamps act
    "gptoss-yarn": GPTOSSConfig(**SMALL, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                sliding_window=WINDOW, num_experts=3, experts_per_token=2, intermediate_size=24,
                                rope_theta=10_000.0, rope_scaling_factor=4.0, initial_context_length=64,
                                layer_types=("full_attention", "sliding_attention", "sliding_attention",
                                             "full_attention")),
    "gptoss-dense-ffn": GPTOSSConfig(**SMALL, num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                                     sliding_window=WINDOW, num_experts=1, experts_per_token=1,
                                     intermediate_size=24, tie_word_embeddings=True, bias=False),
    "gpt2": GPT2Config(**SMALL, num_attention_heads=4),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    model = random_model(CONFIGS[request.param])
    export_model(model, tmp / "model.safetensors", "fp32")
    ids = torch.randint(0, model.config.vocab_size, (PROMPT_LEN,), generator=torch.Generator().manual_seed(1))
    js = run_node(tmp, f"""
const model = load({json.dumps(str(tmp / 'model.safetensors'))});
const ids = {json.dumps(ids.tolist())};
fs.writeFileSync({json.dumps(str(tmp / 'full.f32'))}, model.logitsAll(ids, false));
fs.writeFileSync({json.dumps(str(tmp / 'cached.f32'))}, model.logitsAll(ids, true));
const cache = model.newKVCache(ids.length), traces = [];
for (const id of ids) {{ const t = {{}}; model.forward(id, cache, t); traces.push(t.layers); }}
const plain = (t) => t.map((l) => ({{keys: Array.from(l.keys), experts: l.experts, weights: l.weights,
  heads: l.heads.map((h) => ({{probs: Array.from(h.probs), sink: h.sink}}))}}));
console.log(JSON.stringify({{traces: traces.map(plain)}}));
""")
    with torch.no_grad():
        out = model(ids[None]).logits[0]
    V = model.config.vocab_size
    read = lambda name: torch.from_numpy(np.fromfile(tmp / name, dtype=np.float32).reshape(-1, V))
    return dict(model=model, ids=ids, torch_logits=out, full=read("full.f32"), cached=read("cached.f32"),
                traces=js["traces"], name=request.param,
                path=tmp / "model.safetensors")


def test_js_logits_equal_pytorch(exported):
    # the float32 forward within 1e-4 at every position, with every key kept and with the ring buffers
    ref = exported["torch_logits"]
    for path in ("full", "cached"):
        diff = (exported[path] - ref).abs().max().item()
        print(f"{exported['name']} {path}: max |JS - PyTorch| = {diff:.2e}")
        assert diff < 1e-4, f"{path}: {diff}"


@pytest.mark.parametrize("half", ["fp16", "bf16"])
def test_half_weights_decode_exactly(exported, tmp_path, half):
    # half-precision weights decode to exactly torch's values: the JS logits equal a PyTorch model
    # rounded the same way (the exporter writes fp16; bf16 files come from elsewhere, e.g. save_file)
    model = exported["model"]
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[half]
    if half == "fp16":
        export_model(model, tmp_path / "half.safetensors", "fp16")
    else:
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(str(exported["path"]), "pt") as f:
            tensors = {k: f.get_tensor(k) if k.endswith("sinks") else f.get_tensor(k).to(dtype) for k in f.keys()}
            save_file(tensors, str(tmp_path / "half.safetensors"), metadata=f.metadata())
    ids = exported["ids"][:10].tolist()
    run_node(tmp_path, f"""
const model = load({json.dumps(str(tmp_path / 'half.safetensors'))});
fs.writeFileSync({json.dumps(str(tmp_path / 'half.f32'))}, model.logitsAll({json.dumps(ids)}));
console.log("{{}}");""")
    rounded = random_model(model.config)
    with torch.no_grad():
        for name, p in rounded.named_parameters():
            if not name.endswith("sinks"):
                p.copy_(p.to(dtype).float())
        ref = rounded(torch.tensor([ids])).logits[0]
    js = torch.from_numpy(np.fromfile(tmp_path / "half.f32", dtype=np.float32).reshape(len(ids), -1))
    assert (js - ref).abs().max().item() < 1e-4


def test_attention_rows_and_sink_sum_to_one(exported):
    config = exported["model"].config
    for pos, layers in enumerate(exported["traces"]):
        for kind, layer in zip(config.layer_types, layers):
            seen = min(pos + 1, WINDOW) if kind == "sliding_attention" else pos + 1
            assert layer["keys"] == list(range(pos + 1 - seen, pos + 1))  # the window's edge, in order
            for head in layer["heads"]:
                assert len(head["probs"]) == seen
                assert sum(head["probs"]) + head["sink"] == pytest.approx(1.0, abs=1e-5)
                assert (head["sink"] > 0) == config.attn_sinks


def test_attention_probs_equal_pytorch(exported):
    # the probabilities the explorer shows are the reference attention's, sink share included
    from nanogptoss.model.attention import attention_mask, attention_reference
    from nanogptoss.model.rope import apply_rotary_emb

    model, ids = exported["model"], exported["ids"]
    config = model.config
    positions = torch.arange(len(ids))
    x = model.embedding(ids[None])
    if model.pos_embedding is not None:
        x = x + model.pos_embedding(positions)
    rope = model.rope(positions) if model.rope is not None else None
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            a, h = block.attn, block.attn_norm(x)
            q = a.q_proj(h).view(1, -1, config.num_attention_heads, config.head_dim).transpose(1, 2)
            k = a.k_proj(h).view(1, -1, config.num_key_value_heads, config.head_dim).transpose(1, 2)
            v = a.v_proj(h).view(1, -1, config.num_key_value_heads, config.head_dim).transpose(1, 2)
            if rope is not None:
                q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
            _, probs = attention_reference(q, k, v, attention_mask(positions, positions, a.sliding_window),
                                           a.sinks, return_probs=True)
            for pos, layers in enumerate(exported["traces"]):
                for head, shown in enumerate(layers[i]["heads"]):
                    row = probs[0, head, pos, layers[i]["keys"]]
                    assert torch.allclose(torch.tensor(shown["probs"], dtype=torch.float32), row, atol=1e-5)
                    assert shown["sink"] == pytest.approx(1 - probs[0, head, pos].sum().item(), abs=1e-5)
            x = block(x, positions, rope)


def test_router_choices_equal_pytorch(exported):
    model = exported["model"]
    if not model.config.is_moe:
        assert all("experts" not in layer for layers in exported["traces"] for layer in layers)
        return
    with torch.no_grad():
        model(exported["ids"][None])
    for i, block in enumerate(model.moe_blocks()):
        routing = block.last_routing
        for pos, layers in enumerate(exported["traces"]):
            assert layers[i]["experts"] == routing.indices[pos].tolist()
            assert layers[i]["weights"] == pytest.approx(routing.weights[pos].tolist(), abs=1e-5)


def test_js_greedy_generation_equals_pytorch(exported, tmp_path):
    model, prompt = exported["model"], exported["ids"][:5].tolist()
    js = run_node(tmp_path, f"""
const model = load({json.dumps(str(exported['path']))});
console.log(JSON.stringify(model.generate({json.dumps(prompt)}, 30, M.makeSampler({{temperature: 0}}))));
""")
    ref = model.generate(torch.tensor([prompt]), 30, temperature=0)[0].tolist()
    assert js == ref


# -- sampling -----------------------------------------------------------------------------------

def test_sample_from_probs_is_the_inverse_cdf():
    probs = torch.tensor([0.2, 0.0, 0.5, 0.3])
    picks = [sample_from_probs(probs, u).item() for u in (0.0, 0.1999, 0.21, 0.69, 0.71, 0.999999, 1.0)]
    assert picks == [0, 0, 2, 2, 3, 3, 3]
    # uniform draws give the distribution
    draws = sample_from_probs(probs.expand(20_000, 4), torch.rand(20_000, generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(draws.flatten(), minlength=4).float() / 20_000
    assert torch.allclose(freq, probs, atol=0.015)


KNOBS = [dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.9),
         dict(temperature=0.8, top_k=20, top_p=0.5), dict(temperature=2.0, top_k=1), dict(temperature=0.0)]


def test_js_sampler_equals_python_given_the_same_draws(tmp_path):
    logits = torch.randn(200, 97, generator=torch.Generator().manual_seed(3)) * 3
    logits[:, 10] = logits[:, 11]  # a tie, kept together by top-k
    knobs = [dict(temperature=k["temperature"], topK=k.get("top_k"), topP=k.get("top_p")) for k in KNOBS]
    js = run_node(tmp_path, f"""
const rows = {json.dumps(logits.tolist())}, out = [];
for (const [i, knob] of {json.dumps(knobs)}.entries()) {{
  const draws = [], rand = M.mulberry32(i + 1), drawn = () => {{ const u = rand(); draws.push(u); return u; }};
  const sample = M.makeSampler({{...knob, rand: drawn}});
  out.push({{ids: rows.map((r) => sample(Float32Array.from(r))), draws}});
}}
console.log(JSON.stringify(out));
""")
    for knob, got in zip(KNOBS, js):
        if knob["temperature"] == 0:
            assert got["ids"] == logits.argmax(-1).tolist() and got["draws"] == []
            continue
        assert len(set(got["draws"])) == len(logits)  # one fresh draw per token
        probs = next_token_probs(logits, **knob)
        ref = sample_from_probs(probs, torch.tensor(got["draws"], dtype=torch.float64))
        assert got["ids"] == ref.flatten().tolist(), knob
        assert all(probs[i, t] > 0 for i, t in enumerate(got["ids"]))  # never outside top-k/top-p


# -- the tokenizer ------------------------------------------------------------------------------

EDGE_CASES = ["", " ", "  hello  world  ", "Tom's dog'll run\n\n\nend", "x\u0085y\u0085\u0085 z", "\ufeffa \ufeff b",
              "42 apples, 3.14159 pies; 1000000!", "naïve café — «quote» 日本語 テキスト 🙂🙂 e\u0301",
              "tabs\tand\r\nlines \n  \n", "ALL CAPS'S 'S", "    leading", "trailing    ",
              "  \u0085x", "a  \ufeffb", "\u2003\u2003word\u3000 \u00a0end"]  # where JS's \s and Unicode's differ


def test_js_pretokenizer_splits_as_the_regex_module(tmp_path):
    # the pieces themselves, against the `regex` module (Unicode \s, as tiktoken's engine)
    import regex

    from nanogptoss.data.tokenizer import GPT2_PATTERN

    (tmp_path / "texts.json").write_text(json.dumps(EDGE_CASES))
    js = run_node(tmp_path, f"""
const texts = JSON.parse(fs.readFileSync({json.dumps(str(tmp_path / 'texts.json'))}, "utf8"));
console.log(JSON.stringify(texts.map((t) => t.match(B.GPT2_PATTERN) || [])));
""")
    assert js == [regex.findall(GPT2_PATTERN, t) for t in EDGE_CASES]


def test_js_bpe_equals_tiktoken(tmp_path):
    from nanogptoss.data.stories import load_texts
    from nanogptoss.data.tokenizer import TOKENIZER_DIR, get_tokenizer

    source = "tinystories" if os.environ.get("NANOGPTOSS_DATA") else "synthetic"
    stories = load_texts(source, split="validation", limit=1000)
    assert len(stories) == 1000
    texts = stories + EDGE_CASES
    enc = get_tokenizer("tinystories-4k")
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    js = run_node(tmp_path, f"""
const tok = new B.Tokenizer(fs.readFileSync({json.dumps(str(TOKENIZER_DIR / 'tinystories-4k.tiktoken'))}, "utf8"));
const texts = JSON.parse(fs.readFileSync({json.dumps(str(tmp_path / 'texts.json'))}, "utf8"));
const ids = texts.map((t) => tok.encodeOrdinary(t));
console.log(JSON.stringify({{ids, roundTrip: texts.every((t, i) => tok.decode(ids[i]) === t),
  special: tok.encode("The end.<|endoftext|>Once"), nVocab: tok.nVocab}}));
""")
    equal = sum(got == enc.encode_ordinary(t) for got, t in zip(js["ids"], texts))
    print(f"JS BPE == tiktoken on {equal}/{len(texts)} texts ({len(stories)} {source} validation stories)")
    assert equal == len(texts)
    assert js["roundTrip"]
    assert js["special"] == enc.encode("The end.<|endoftext|>Once", allowed_special="all")
    assert js["nVocab"] == enc.n_vocab


# -- the exporter's bad inputs ------------------------------------------------------------------

def test_export_refuses_an_unknown_dtype(tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_model(random_model(CONFIGS["gpt2"]), tmp_path / "m.safetensors", "int8")
    assert not (tmp_path / "m.safetensors").exists()


def test_export_command_says_one_line_for_a_missing_checkpoint(tmp_path):
    import sys

    done = subprocess.run([sys.executable, "-m", "nanogptoss.book.export", str(tmp_path / "none.pt"),
                           str(tmp_path / "m.safetensors")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "none.pt" in done.stderr


def test_js_loader_refuses_a_file_that_is_not_an_export(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    (tmp_path / "junk.bin").write_bytes(b"\x01\x00")
    js = run_node(tmp_path, f"""
const errors = [];
for (const p of ["plain.safetensors", "junk.bin"]) {{
  try {{ load({json.dumps(str(tmp_path))} + "/" + p); errors.push(null); }} catch (e) {{ errors.push(e.message); }}
}}
console.log(JSON.stringify(errors));
""")
    assert "write it with nanogptoss.book.export" in js[0]
    assert "not a safetensors file" in js[1]
