"""The comparison runner: the experiments it sets up, and one tiny end-to-end run."""

import csv
import json
import os
import subprocess
import sys
import time

import pytest

from nanogptoss.training.compare import (RunSpec, build_parser, grid_specs, ladder_rungs, ladder_specs,
                                         markdown_table, matched_gpt2_hidden, report, run_all, summarize)
from nanogptoss.training.train import TrainConfig, read_metrics
from nanogptoss.config import get_config
from nanogptoss.model.params import count_parameters, flops_per_token


@pytest.mark.parametrize("preset", ["cpu-tiny", "colab-t4", "gpu"])
def test_ladder_turns_on_one_switch_at_a_time_and_ends_at_gptoss(preset):
    rungs = ladder_rungs(preset)
    configs = [get_config(preset, "gpt2", **overrides) for _, overrides in rungs]
    assert configs[0] == get_config(preset, "gpt2")
    assert configs[-1] == get_config(preset, "gptoss")
    for before, after in zip(configs, configs[1:]):
        assert before != after  # every rung changes something
    assert len({label for label, _ in rungs}) == len(rungs)


@pytest.mark.parametrize("match", ["active", "flops"])
def test_grid_matches_gpt2_to_gptoss(match):
    specs = grid_specs("cpu-tiny", heads=[2, 4], layers=[2, 3], seeds=[0], match=match)
    assert len(specs) == 8
    measure = (lambda c: count_parameters(c).active) if match == "active" else \
        (lambda c: flops_per_token(c, training=True))
    for oss, gpt2 in zip(specs[::2], specs[1::2]):
        assert (oss.model, gpt2.model) == ("gptoss", "gpt2") and oss.group == gpt2.group
        a, b = measure(oss.config("cpu-tiny")), measure(gpt2.config("cpu-tiny"))
        assert abs(a - b) / a < 0.01, (oss.label, a, b)
        assert oss.config("cpu-tiny").num_attention_heads == gpt2.config("cpu-tiny").num_attention_heads
        assert oss.config("cpu-tiny").head_dim == gpt2.config("cpu-tiny").head_dim


def test_grid_rejects_heads_that_do_not_divide_the_width():
    with pytest.raises(ValueError, match="not divisible"):
        grid_specs("cpu-tiny", heads=[3], layers=[2], seeds=[0])
    with pytest.raises(ValueError, match="match"):
        matched_gpt2_hidden(get_config("cpu-tiny"), get_config("cpu-tiny", "gpt2"), match="bytes")


def test_summary_averages_seeds_and_reports_spread():
    results = [dict(group="g", label="A", seed=s, val_bpb=v, val_loss=v, train_loss=v, params_total=10,
                    params_active=5, weights_mb=1.0, peak_memory_mb=100.0, train_tokens_per_s=1.0,
                    gen_tokens_per_s=1.0) for s, v in enumerate([1.0, 2.0, 3.0])]
    (line,) = summarize(results)
    assert line["seeds"] == 3 and line["val_bpb"] == pytest.approx(2.0) and line["val_bpb_sd"] == pytest.approx(1.0)
    assert "2.0000 ± 1.0000" in markdown_table([line], floor_bpb=0.5)
    assert "0.5000 bits/byte" in markdown_table([line], floor_bpb=0.5)


def test_tiny_comparison_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    budget = TrainConfig(data="synthetic", max_steps=4, batch_size=4, eval_interval=2, eval_tokens=512,
                         max_stories=300, warmup_steps=1, device="cpu")
    specs = [RunSpec("GPT-2", "gpt2", dict(num_hidden_layers=1), seed=0, group="x"),
             RunSpec("GPT-OSS", "gptoss", dict(num_hidden_layers=1), seed=0, group="x")]
    results = run_all(specs, budget, tmp_path / "out", progress=False)
    assert [r["label"] for r in results] == ["GPT-2", "GPT-OSS"]
    for r in results:
        assert 0 < r["val_bpb"] < 10 and r["gen_tokens_per_s"] > 0 and r["weights_mb"] > 0
    assert results[1]["params_total"] > results[1]["params_active"]  # the MoE holds more than a token uses
    md = report("grid", results, budget, tmp_path / "out", "python -m nanogptoss compare grid ...")
    assert "Entropy floor" in md and "| GPT-OSS | 1 |" in md
    for name in ("grid.md", "grid.csv", "grid_curves.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    with open(tmp_path / "out" / "grid.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    # finished runs are reused, not retrained
    ckpt = tmp_path / "out" / "runs" / specs[0].name / "checkpoint.safetensors"
    before = ckpt.stat().st_mtime_ns
    again = run_all(specs[:1], budget, tmp_path / "out", progress=False)
    assert ckpt.stat().st_mtime_ns == before and again[0]["val_bpb"] == results[0]["val_bpb"]
    # ... but a run made with other settings is trained again
    longer = run_all(specs[:1], budget.replace(max_steps=6), tmp_path / "out", progress=False)
    assert longer[0]["steps"] == 6 and ckpt.stat().st_mtime_ns != before


def test_the_compare_parser_takes_the_trainer_s_options_typed():
    args = build_parser().parse_args(["grid", "--max-steps", "7", "--lr", "0.01", "--compile"])
    assert (args.max_steps, args.lr, args.compile, args.batch_size) == (7, 0.01, True, 16)
    help_text = build_parser().format_help()
    assert "--grad-clip" in help_text and "--set" not in help_text  # shared budget; per-run fields stay out


def test_ladder_specs_cover_every_seed():
    specs = ladder_specs("cpu-tiny", seeds=[0, 1])
    assert len(specs) == 2 * len(ladder_rungs("cpu-tiny"))
    assert len({s.name for s in specs}) == len(specs)


def test_cli_reports_bad_options_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nanogptoss", "compare", "grid", "--heads", "3",
                             "--out", str(tmp_path)], capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode != 0
    assert "not divisible" in result.stderr and "Traceback" not in result.stderr


def test_speedrun_window_changes_only_the_gptoss_and_keeps_the_match():
    from nanogptoss.training.compare import parse_per_model, speedrun_specs

    plain = speedrun_specs("cpu-tiny", 4, 4, 0, {})
    per_model = parse_per_model(["gptoss:sliding_window=64", "gptoss:lr=0.004", "gpt2:batch_size=4"])
    assert per_model == {"gptoss": {"sliding_window": 64, "lr": 0.004}, "gpt2": {"batch_size": 4}}
    oss, gpt2 = speedrun_specs("cpu-tiny", 4, 4, 0, per_model)
    assert oss.config("cpu-tiny").sliding_window == 64 and plain[0].config("cpu-tiny").sliding_window == 32
    assert oss.train == {"lr": 0.004} and gpt2.train == {"batch_size": 4}  # options to the run, fields to the model
    assert "window 64" in oss.label and oss.name != plain[0].name  # its own row label and its own folder
    # the window leaves the GPT-OSS's parameters alone, so the GPT-2 matched to it is the same model
    assert count_parameters(oss.config("cpu-tiny")) == count_parameters(plain[0].config("cpu-tiny"))
    assert gpt2.overrides == plain[1].overrides and gpt2.name == plain[1].name


def test_speedrun_gives_every_model_the_same_wall_clock(tmp_path, monkeypatch):
    from nanogptoss.training import compare

    monkeypatch.chdir(tmp_path)
    compare.main(["speedrun", "--minutes", "0.04", "--seeds", "0", "--data", "synthetic", "--max-stories", "300",
                  "--batch-size", "4", "--eval-interval", "5", "--eval-tokens", "512", "--warmup-steps", "2",
                  "--per-model", "gpt2:batch_size=2", "--per-model", "gpt2:lr=0.001", "--per-model", "gpt2:min_lr=1e-4",
                  "--per-model", "gptoss:sliding_window=16", "--out", str(tmp_path / "sr")])
    with open(tmp_path / "sr" / "speedrun.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["gptoss", "gpt2"]
    assert all(r["name"].startswith("speedrun-") for r in rows)  # never a grid run's folder in the same --out
    # each model at its own settings: the GPT-2 row took --per-model's, the GPT-OSS row the shared ones
    assert [(r["batch_size"], r["lr"]) for r in rows] == [("4", "0.002 → 0.0002"), ("2", "0.001 → 0.0001")]
    for r in rows:  # each stopped by the clock (2.4 s of training), not by a step count
        assert 2.4 <= float(r["train_s"]) < 10
        assert int(r["tokens_seen"]) == int(r["steps"]) * int(r["batch_size"]) * 128
        assert int(r["threads"]) == 1  # side by side, one thread each: the same share of the machine
        options = json.loads((tmp_path / "sr" / "runs" / r["name"] / "options.json").read_text())
        assert options["batch_size"] == int(r["batch_size"])
        assert options["overrides"].get("sliding_window") == (16 if r["model"] == "gptoss" else None)
    assert rows[0]["label"].endswith(", sliding window 16")  # the table says which window the GPT-OSS had
    md = (tmp_path / "sr" / "speedrun.md").read_text()
    assert "| 0.001 → 0.0001 | 2 |" in md
    assert "0.04 minutes of training per run" in md and "synthetic stories" in md
    assert (tmp_path / "sr" / "speedrun_curves.png").stat().st_size > 0


SMALL = ["--data", "synthetic", "--max-stories", "300", "--max-steps", "3", "--batch-size", "4", "--eval-interval", "3",
         "--eval-tokens", "512", "--warmup-steps", "1", "--layers", "1"]


def test_repeated_seeds_are_refused_not_reported_as_a_spread(tmp_path):
    from nanogptoss.training import compare

    with pytest.raises(SystemExit, match=r"^error: --seeds 0 1 0 repeats seed 0; give each seed once$"):
        compare.main(["grid", "--seeds", "0", "1", "0", *SMALL, "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()  # refused before anything trained


def test_a_comparison_never_empties_a_folder_another_one_is_using(tmp_path):
    """A held lock stands for a live comparison (on --out) or a live trainer (on a run folder): the
    second comparison refuses in one line naming the folder, and deletes nothing."""
    from nanogptoss.files import FolderInUse, FolderLock

    budget = TrainConfig(data="synthetic", max_steps=2, batch_size=4, eval_interval=2, eval_tokens=512,
                         max_stories=300, warmup_steps=1, device="cpu")
    spec = RunSpec("GPT-2", "gpt2", dict(num_hidden_layers=1), seed=0, group="x")
    out = tmp_path / "out"
    run_dir = out / "runs" / spec.name
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')  # a live run's log
    with FolderLock(out):
        with pytest.raises(FolderInUse, match=rf"^{out} is in use .*; wait for it to finish, or choose another --out$"):
            run_all([spec], budget, out, progress=False)
    with FolderLock(run_dir):
        with pytest.raises(FolderInUse, match=rf"^{run_dir} is in use .* choose another --out$"):
            run_all([spec], budget, out, progress=False)
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 1, "loss": 5.0}\n'
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "metrics.jsonl"]


def test_two_comparisons_into_one_folder_never_mix(tmp_path):
    """The issue's race with real processes: the second `compare` starts while the first trains."""
    out = tmp_path / "c"
    argv = [sys.executable, "-m", "nanogptoss", "compare", "grid", "--seeds", "0", *SMALL, "--max-steps", "20",
            "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None and not list(out.glob("runs/*/metrics.jsonl")):
        time.sleep(0.05)
    assert first.poll() is None, f"the first comparison ended before the second began: {first.stderr.read()[-2000:]}"
    second = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    still_training = first.poll() is None
    out_text, err_text = first.communicate(timeout=600)
    assert first.returncode == 0, err_text[-3000:]
    assert still_training, "the first comparison finished before the second was refused; the test proves nothing"
    assert second.returncode != 0
    assert second.stderr.strip() == (f"error: {out} is in use by a run that is still going (pid {first.pid}); "
                                     "wait for it to finish, or choose another --out")
    for run_dir in out.glob("runs/*"):  # each run's log is its own: every step once, in order
        assert [r["step"] for r in read_metrics(run_dir)] == list(range(1, 21))
