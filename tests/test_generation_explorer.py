"""The generation explorer (nanogptoss/book/widgets.py's GenerationExplorer, js/generation.js):
the module string anywidget runs, with model.js and bpe.js inlined, decoding in Node.js
against PyTorch on small random models exported into tmp_path; its Python side."""

from __future__ import annotations

import json

import pytest
import torch
from test_js_model import CONFIGS, JS, WINDOW, random_model, run_node

from nanogptoss.book.export import export_model
from nanogptoss.book.widgets import GenerationExplorer, browser_files, inline_module
from nanogptoss.model.generate import next_token_probs, sample_from_probs


@pytest.fixture(scope="module", params=["gptoss", "gpt2"])
def explorer_run(request, tmp_path_factory):
    """The inlined module's greedy decoding of a random model: every step it describes."""
    tmp = tmp_path_factory.mktemp(request.param)
    model = random_model(CONFIGS[request.param])
    export_model(model, tmp / "model.safetensors", "fp16")
    (tmp / "generation.mjs").write_text(inline_module(JS / "generation.js"))
    prompt = torch.randint(0, model.config.vocab_size, (3 * WINDOW,), generator=torch.Generator().manual_seed(2))
    js = run_node(tmp, f"""
const G = await import({json.dumps((tmp / 'generation.mjs').as_uri())});
const model = load({json.dumps(str(tmp / 'model.safetensors'))});
const steps = [];
const knobs = {{maxNewTokens: 20, temperature: 0, topP: 1, seed: 0}};
const {{ids}} = await G.generate(model, {json.dumps(prompt.tolist())}, knobs, (s) => {{ steps.push(s); return true; }});
const stopped = await G.generate(model, {json.dumps(prompt.tolist())}, knobs, (s) => false);
const sampled = {{maxNewTokens: 20, temperature: 0.8, topP: 0.9, seed: 5}};
const draws = Array.from({{length: 20}}, M.mulberry32(5));  // the sampler's: one per token
const again = [];
for (let i = 0; i < 2; i++) again.push((await G.generate(model, {json.dumps(prompt.tolist())}, sampled, () => true)).ids);
console.log(JSON.stringify({{ids, steps, stopped: stopped.ids, sampled: again, draws}}));
""")
    from nanogptoss.weights.shipped import read_exported

    half, _ = read_exported(tmp / "model.safetensors")  # the fp16 weights the browser computes with
    return dict(model=half, prompt=prompt.tolist(), **js)


def test_explorer_greedy_ids_equal_pytorch(explorer_run):
    prompt = explorer_run["prompt"]
    ref = explorer_run["model"].generate(torch.tensor([prompt]), 20, temperature=0)[0, len(prompt):].tolist()
    assert explorer_run["ids"] == ref
    assert [s["id"] for s in explorer_run["steps"]] == ref
    assert explorer_run["stopped"] == ref[:1]  # onStep returning false ends the run


def test_explorer_samples_as_python_given_the_same_draws(explorer_run):
    # temperature 0.8, top-p 0.9, seed 5: the seed's uniform draws through Python's sampler
    model, ids = explorer_run["model"], list(explorer_run["prompt"])
    first, second = explorer_run["sampled"]
    assert first == second  # a seed gives the same story again
    with torch.no_grad():
        for u in explorer_run["draws"]:
            probs = next_token_probs(model(torch.tensor([ids])).logits[0, -1], 0.8, top_p=0.9)
            ids.append(sample_from_probs(probs, u).item())
    assert first == ids[len(explorer_run["prompt"]):]
    assert first != explorer_run["ids"]  # and it is not the greedy story


def test_explorer_attention_rows_cover_every_earlier_key(explorer_run):
    config = explorer_run["model"].config
    for n, step in enumerate(explorer_run["steps"]):
        position = len(explorer_run["prompt"]) + n
        assert step["position"] == position and step["query_position"] == position - 1
        q = position - 1
        for kind, layer in zip(config.layer_types, step["layers"]):
            assert layer["keys"] == list(range(q + 1))
            for head in layer["heads"]:
                assert sum(head["probs"]) + head["sink"] == pytest.approx(1.0, abs=1e-5)
                if kind == "sliding_attention":  # nothing outside the window, something inside
                    assert all(p == 0 for p in head["probs"][: q + 1 - WINDOW])
                    assert all(p > 0 for p in head["probs"][q + 1 - WINDOW:])
            assert (layer["experts"] is not None) == config.is_moe
            if config.is_moe:
                assert sum(layer["weights"]) == pytest.approx(1.0, abs=1e-6)
        # the candidates: the chosen (greedy) token is the most likely one
        assert step["candidates"][0]["id"] == step["id"]
        assert step["prob"] == pytest.approx(step["candidates"][0]["prob"])


def test_inline_module_refuses_what_it_cannot_inline(tmp_path):
    (tmp_path / "dep.js").write_text("export default 3;\n")
    (tmp_path / "main.js").write_text('import * as D from "./dep.js";\n')
    with pytest.raises(ValueError, match="only `export function/class/const` can be inlined"):
        inline_module(tmp_path / "main.js")


def test_explorer_checks_its_settings():
    with pytest.raises(ValueError, match="pretrained must be one of"):
        GenerationExplorer("tinystories-llama")
    w = GenerationExplorer("tinystories-gpt2")
    for name, bad in (("temperature", -0.1), ("top_p", 0.0), ("max_new_tokens", 0), ("seed", -1)):
        with pytest.raises(ValueError, match=f"{name} must be between"):
            setattr(w, name, bad)


def test_explorer_sends_the_files_the_browser_asks_for(monkeypatch):
    w, sent = GenerationExplorer(), []
    monkeypatch.setattr(w, "send", lambda content, buffers=None: sent.append((content, buffers)))
    w._send_file(w, {"request": "file", "name": "tinystories-4k.tiktoken"}, [])
    w._send_file(w, {"request": "file", "name": "../../etc/passwd"}, [])
    w._send_file(w, {"something": "else"}, [])
    assert sent[0] == ({"file": "tinystories-4k.tiktoken"}, [browser_files()["tinystories-4k.tiktoken"].read_bytes()])
    assert "no such file" in sent[1][0]["error"] and sent[1][1] is None
    assert len(sent) == 2


def test_saved_state_holds_no_weights():
    # what a notebook saves for the widget: the module and the settings, never the model's bytes
    state = GenerationExplorer().get_state()
    assert sum(len(str(v)) for v in state.values()) < 100_000
