"""The benchmark scripts run end to end at a tiny size (a smoke test: no timing is checked)
and end with their ratio lines."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # one interpreter for both scripts: importing torch and transformers twice costs more
    # than the runs themselves
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import bench_train, bench_decode; "
            f"bench_train.main(['--smoke', '--json', {str(out / 'train.json')!r}]); print('=====', flush=True); "
            f"bench_decode.main(['--smoke', '--json', {str(out / 'decode.json')!r}])")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    train, decode = run.stdout.split("=====\n")
    return train, decode, json.loads((out / "train.json").read_text()), json.loads((out / "decode.json").read_text())


def closing_lines(text):
    """The lines after the final "ratios" header."""
    return text.rstrip().split("\nratios\n")[-1].splitlines()


def test_train_benchmark_prints_the_table_then_the_ratios(smoke):
    text, _, result, _ = smoke
    for row in ("nanogptoss, fast paths", "nanogptoss, plain paths", "transformers GptOssForCausalLM"):
        assert row in text
    last = closing_lines(text)
    assert last[0].startswith("ratio train nanogptoss fast / transformers: ")
    assert last[1].startswith("ratio train nanogptoss fast / plain: ")
    assert last[2].startswith("MFU nanogptoss fast: ")
    assert all(r["tokens_per_s"] > 0 for r in result["rows"]) and len(result["rows"]) == 3
    # the comparison is fair only if both libraries hold the same model
    ours, theirs = re.search(r"same loss: nanogptoss ([\d.]+), transformers ([\d.]+)", text).groups()
    assert abs(float(ours) - float(theirs)) < 1e-3


def test_decode_benchmark_prints_the_table_then_the_ratios(smoke):
    _, text, _, result = smoke
    assert "same greedy tokens as transformers: yes" in text
    last = closing_lines(text)
    assert last[0].startswith("ratio decode nanogptoss / transformers generate (8 tokens): ")
    assert last[1].startswith("ratio decode KV cache / no cache (16 tokens): ")
    assert last[2].startswith("ratio decode fast / plain paths: ")
    assert {r["name"] for r in result["rows"]} >= {"nanogptoss, KV cache, fast paths",
                                                    "nanogptoss, no cache, 16 tokens"}
    assert all(r["tokens_per_s"] > 0 for r in result["rows"])


def test_cpu_levers_benchmark_times_every_lever_on_both_models(tmp_path):
    # torch.compile's first step alone takes most of a minute on two cores: its row is left
    # out here (the published run has it)
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import bench_cpu_levers; "
            f"bench_cpu_levers.main(['--smoke', '--no-compile', '--json', {str(tmp_path / 'levers.json')!r}])")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "levers.json").read_text())
    names = {r["name"] for r in result["rows"]}
    for model in ("GPT-OSS", "GPT-2"):
        assert {f"{model}: float32, 1 thread(s)", f"{model}: bf16 autocast, 1 thread(s)"} <= names
        assert f"{model}: bf16 autocast, 1 thread(s) / float32 1 thread" in result["ratios"]
        # the same model, seed and batches in both precisions: the losses are close, not equal
        fp32, bf16 = result["quality_loss"][f"{model}: float32"], result["quality_loss"][f"{model}: bf16 autocast"]
        assert fp32 != bf16 and abs(fp32 - bf16) < 0.1
    assert all(r["tokens_per_s"] > 0 for r in result["rows"])
    assert "ratio GPT-OSS: bf16 autocast, 1 thread(s) / float32 1 thread: " in run.stdout


def test_speedrun_tuning_runs_every_setting_and_marks_each_models_best(tmp_path):
    md = tmp_path / "tune.md"
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import tune_speedrun; "
            f"tune_speedrun.main(['--minutes', '0.03', '--lr', '0.002', '0.004', '--batch-size', '4', "
            f"'--warmup-steps', '2', '--out', {str(tmp_path / 'runs')!r}, '--md', {str(md)!r}, "
            "'--variants', '--layers 1', "
            "'--data', 'synthetic', '--max-stories', '300', '--eval-tokens', '512'])")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 0.00")]
    assert [line.split(" | ")[0] for line in rows] == ["| 0.002", "| 0.004"]
    assert sum(line.count("**") for line in rows) == 4  # one best per model
    assert "--data synthetic" in text and "0.03 minutes" in text and "synthetic stories" in text.splitlines()[0]
    # each setting has its own run folder: the second never reuses or overwrites the first
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"lr0.002-b4", "lr0.004-b4", "variant-layers-1"}
    # the variant ran at each model's best setting, with the option it names: one layer, not the preset's four
    assert "| (none: the best rows above) |" in text and "| `--layers 1` |" in text
    variant_runs = (tmp_path / "runs" / "variant-layers-1" / "runs").iterdir()
    assert {p.name for p in variant_runs} == {"speedrun-gpt-oss-4-heads-x-1-layers-s0", "speedrun-gpt-2-4-heads-x-1-layers-s0"}


def test_cpu_memory_benchmark_reports_each_dtype(tmp_path):
    run = subprocess.run([sys.executable, "benchmarks/bench_cpu_memory.py", "--steps", "2", "--batch", "2",
                          "--models", "gpt2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split(" | ") for line in run.stdout.splitlines() if line.startswith("| gpt2 |")]
    assert [r[1] for r in rows] == ["float32", "bfloat16"]
    assert all(float(r[2].replace(",", "")) >= 0 for r in rows)
