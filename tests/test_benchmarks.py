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
