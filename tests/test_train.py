"""The trainer: schedule, optimizer groups, exact resume after SIGKILL, DDP equals one process, errors."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nanogptoss import GPTOSS, get_config
from nanogptoss.training.train import TrainConfig, build_parser, lr_at, param_groups, parse_overrides, read_metrics, train
from nanogptoss.weights.checkpoint import Checkpoint, CheckpointError, load_model, save_checkpoint

from conftest import TINY, cli_args, config, tiny_gptoss

ROOT = Path(__file__).resolve().parents[1]


def losses(cfg: TrainConfig) -> list[tuple]:
    rows = read_metrics(cfg.out_dir)
    return [(r["step"], r["loss"], r.get("val_loss")) for r in rows]


def test_lr_warms_up_to_one_peak_then_decays_to_min_lr_at_the_last_step():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    lrs = [lr_at(s, cfg) for s in range(cfg.max_steps)]
    assert lrs[0] == pytest.approx(0.1)  # the first step already trains: lr / warmup_steps
    assert lrs[9] == pytest.approx(1.0)  # the warmup's last step is the peak ...
    assert lrs.count(max(lrs)) == 1 and lrs[10] < 1.0  # ... and the only step at it
    assert lrs[59] == pytest.approx(0.55)  # half way through the 100 cosine steps
    assert lrs[-1] == pytest.approx(0.1)  # the last step, max_steps - 1, ends at min_lr
    assert all(a > b for a, b in zip(lrs[9:], lrs[10:]))


def test_weight_decay_on_the_matrices_that_multiply_activations_only():
    model = GPTOSS(tiny_gptoss())
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    L = model.config.num_hidden_layers
    expected = {"unembedding.weight"} | {f"blocks.{i}.{m}" for i in range(L) for m in (
        "attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight", "attn.o_proj.weight",
        "mlp.router.weight", "mlp.experts.gate_up_proj", "mlp.experts.down_proj")}
    assert decayed == expected  # GPT-OSS's untied output layer included
    assert "embedding.weight" in exempt and all(("norm" in n or "bias" in n or "sinks" in n or n == "embedding.weight")
                                                for n in exempt)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_weight_decay_rule_goes_by_module_type_not_by_name():
    from nanogptoss import GPT2

    # a tied unembedding is the embedding matrix: it multiplies activations, so it is decayed, once
    gpt2 = GPT2(get_config("cpu-tiny", "gpt2"))
    decay, no_decay = param_groups(gpt2, 0.1)
    assert any(p is gpt2.embedding.weight for p in decay["params"])
    assert not any(p is gpt2.pos_embedding.weight for p in decay["params"])  # looked up only
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(gpt2.parameters()))
    # a renamed linear layer is still decayed; a 2-D parameter that is no matrix product is not
    model = GPTOSS(tiny_gptoss())
    model.embedding_projection = torch.nn.Linear(4, 4, bias=False)
    model.some_table = torch.nn.Parameter(torch.zeros(3, 3))
    decay, _ = param_groups(model, 0.1)
    assert any(p is model.embedding_projection.weight for p in decay["params"])
    assert not any(p is model.some_table for p in decay["params"])


def test_overrides_are_parsed_as_their_fields_types():
    assert parse_overrides(["num_hidden_layers=2", "attn_sinks=false", "sliding_window=none", "rope_theta=1e4",
                            "norm=rmsnorm", "layer_types=full_attention,sliding_attention"]) \
        == {"num_hidden_layers": 2, "attn_sinks": False, "sliding_window": None, "rope_theta": 1e4,
            "norm": "rmsnorm", "layer_types": ("full_attention", "sliding_attention")}
    assert parse_overrides(["rope_theta=10000"]) == {"rope_theta": 10000.0}  # a float field stays a float
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_overrides(["num_hidden_layers"])
    with pytest.raises(ValueError, match="not a model config field"):
        parse_overrides(["n_layer=2"])
    with pytest.raises(ValueError, match="num_hidden_layers takes an int"):
        parse_overrides(["num_hidden_layers=two"])
    with pytest.raises(ValueError, match="attn_sinks takes a bool"):
        parse_overrides(["attn_sinks=no-thanks"])
    with pytest.raises(ValueError, match="vocab_size follows the tokenizer"):
        TrainConfig(overrides={"vocab_size": 100}).validate()


def test_help_documents_every_option():
    text = build_parser().format_help()
    for f in TrainConfig.__dataclass_fields__:
        assert ("--set" if f == "overrides" else "--" + f.replace("_", "-")) in text


def test_training_learns_and_writes_checkpoint_metrics_summary(tmp_path, stories):
    cfg = config(tmp_path, stories, "learn", max_steps=40, eval_interval=20, lr=3e-3)
    summary = train(cfg)
    rows = losses(cfg)
    assert [r[0] for r in rows] == list(range(1, 41))
    assert rows[-1][2] < 0.6 * rows[0][1]  # validation loss well below the first training loss
    assert summary["val_bpb"] == pytest.approx(summary["val_loss"] * 0 + summary["val_bpb"])  # finite
    assert math.isfinite(summary["val_bpb"]) and summary["params_active"] < summary["params_total"]
    ckpt = Checkpoint(Path(cfg.out_dir) / "checkpoint.safetensors")
    assert ckpt.step == 40 and ckpt.extra["tokenizer"] == "tinystories-4k"
    model, _ = load_model(ckpt.path)
    assert isinstance(model, torch.nn.Module) and model.config.num_hidden_layers == 2
    assert json.loads((Path(cfg.out_dir) / "summary.json").read_text())["steps"] == 40


def test_grad_accumulation_gives_the_same_losses(tmp_path, stories):
    a = config(tmp_path, stories, "acc1", max_steps=4, ckpt_interval=100)
    b = config(tmp_path, stories, "acc2", max_steps=4, ckpt_interval=100, grad_accum=2)
    train(a), train(b)
    for (s1, l1, _), (s2, l2, _) in zip(losses(a), losses(b)):
        assert s1 == s2 and l2 == pytest.approx(l1, rel=1e-5)


def test_sigkill_then_resume_retraces_the_uninterrupted_run(tmp_path, stories):
    steps = 120
    full = config(tmp_path, stories, "full", max_steps=steps, ckpt_interval=25, eval_interval=30)
    train(full)
    cut = config(tmp_path, stories, "cut", max_steps=steps, ckpt_interval=25, eval_interval=30)
    log = Path(cut.out_dir) / "metrics.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "nanogptoss", "train", *cli_args(cut)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 60:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(log.read_text().splitlines())
    saved = Checkpoint(Path(cut.out_dir) / "checkpoint.safetensors").step
    assert 0 < saved < killed_at < steps
    train(config(tmp_path, stories, "cut", max_steps=steps, ckpt_interval=25, eval_interval=30, resume=True))
    assert losses(cut) == losses(full)  # bit for bit, validation losses included


def test_two_process_ddp_matches_one_process(tmp_path, stories):
    one = config(tmp_path, stories, "one", max_steps=5, ckpt_interval=100, eval_interval=5)
    train(one)
    two = config(tmp_path, stories, "two", max_steps=5, ckpt_interval=100, eval_interval=5)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--standalone", "-m", "nanogptoss", "train", *cli_args(two)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = losses(one), losses(two)
    assert [r[0] for r in a] == [r[0] for r in b] == [1, 2, 3, 4, 5]
    for (_, l1, v1), (_, l2, v2) in zip(a, b):
        assert l2 == pytest.approx(l1, rel=1e-4)
        assert (v1 is None and v2 is None) or v2 == pytest.approx(v1, rel=1e-4)
    assert json.loads((Path(two.out_dir) / "summary.json").read_text())["world_size"] == 2


def test_resume_refuses_changed_settings_and_existing_runs(tmp_path, stories):
    cfg = config(tmp_path, stories, "r", max_steps=4)
    train(cfg)
    with pytest.raises(CheckpointError, match="--resume"):
        train(cfg)
    with pytest.raises(CheckpointError, match="lr"):
        train(config(tmp_path, stories, "r", max_steps=8, lr=1e-2, resume=True))
    with pytest.raises(CheckpointError, match="num_hidden_layers"):
        train(config(tmp_path, stories, "r", max_steps=8, resume=True, overrides={**TINY, "num_hidden_layers": 3}))


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path):
    model = GPTOSS(tiny_gptoss())
    opt = torch.optim.AdamW(model.parameters())
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt, step=3)
    ckpt = Checkpoint(path)
    other = GPTOSS(tiny_gptoss())
    ckpt.load_model(other)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    with pytest.raises(CheckpointError, match="num_hidden_layers"):
        ckpt.load_model(GPTOSS(tiny_gptoss(num_hidden_layers=2)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        Checkpoint(path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        Checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Checkpoint(tmp_path / "missing.safetensors")


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    model = GPTOSS(tiny_gptoss(tie_word_embeddings=True))
    for step in range(3):
        save_checkpoint(tmp_path / "c.safetensors", model, step=step)
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
    assert Checkpoint(tmp_path / "c.safetensors").step == 2


def test_bad_cli_options_exit_with_a_message(tmp_path, stories):
    result = subprocess.run([sys.executable, "-m", "nanogptoss", "train", "--data", str(stories), "--batch-size", "6",
                             "--grad-accum", "4", "--no-progress"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "divisible by --grad-accum" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "nanogptoss", "train", "--data", str(tmp_path / "none.txt"),
                             "--no-progress"], cwd=tmp_path, capture_output=True, text=True)
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_training_on_synthetic_stories_approaches_their_true_entropy(tmp_path):
    """Not merely "the loss went down": the grammar's exact entropy is the floor, and we get near it."""
    from nanogptoss.data import synthetic
    from nanogptoss.data.tokenizer import get_tokenizer

    tok = get_tokenizer("gpt2-4k")
    floor = synthetic.entropy_per_token(tok.encode_ordinary, n=2000)  # nats/token, separator included
    uniform = math.log(tok.n_vocab)
    cfg = TrainConfig(model="gptoss", preset="cpu-tiny", data="synthetic", max_stories=2000,
                      overrides=dict(num_hidden_layers=1, hidden_size=64, head_dim=16, intermediate_size=64,
                                     max_position_embeddings=64),
                      batch_size=16, max_steps=120, lr=5e-3, warmup_steps=10, eval_interval=40, eval_tokens=4096,
                      out_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "data"), progress=False)
    summary = train(cfg)
    vals = [r["val_loss"] for r in read_metrics(tmp_path / "run") if "val_loss" in r]
    assert vals == sorted(vals, reverse=True)
    # a model cannot beat the source's entropy on held-out stories: below it means leakage
    assert summary["val_loss"] > floor - 0.01
    # ...and 120 steps of a one-layer model close over 90% of the gap from guessing to the floor
    assert (summary["val_loss"] - floor) < 0.1 * (uniform - floor), (summary["val_loss"], floor)


def test_training_on_genuine_stories_beats_the_unigram_bar(tmp_path):
    """cpu-tiny on the genuine TinyStories sample (where NANOGPTOSS_DATA names it, as on CI; the
    synthetic stories elsewhere) ends well below the bits/byte of the best model that ignores
    context: the unigram entropy of the training tokens, computed here from the shard."""
    import numpy as np

    from nanogptoss.data.stories import read_header

    data = "tinystories" if os.environ.get("NANOGPTOSS_DATA") else "synthetic"
    cfg = TrainConfig(preset="cpu-tiny", data=data, batch_size=8, max_steps=120, warmup_steps=10, lr=3e-3,
                      eval_interval=60, eval_tokens=16384, out_dir=str(tmp_path / "run"),
                      data_dir=str(tmp_path / "data"), progress=False, max_stories=None if data != "synthetic" else 4000)
    summary = train(cfg)
    shard = next((tmp_path / "data").glob("*-train*.bin"))
    header = read_header(shard)
    counts = np.bincount(np.memmap(shard, dtype=np.uint16, mode="r"), minlength=4096).astype(float)
    p = counts[counts > 0] / counts.sum()
    unigram_bpb = float(-(p * np.log2(p)).sum()) * header["count"] / header["bytes"]
    assert summary["data"] == data and summary["val_bpb"] < 0.8 * unigram_bpb, (summary["val_bpb"], unigram_bpb)


def test_a_wall_clock_budget_decays_the_learning_rate_with_time():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=10 ** 9, max_minutes=1.0)
    assert lr_at(5, cfg, progress=0.0) == pytest.approx(0.6)  # warmup still goes by steps
    assert lr_at(50, cfg, progress=0.5) == pytest.approx(0.55) and lr_at(50, cfg, progress=1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="cannot be resumed exactly"):
        TrainConfig(max_minutes=1.0, resume=True).validate()


def test_a_write_the_os_refuses_is_one_line_and_keeps_the_last_checkpoint(tmp_path, stories):
    """A real OS error mid-run (the file-size limit, as a full disk would): the checkpoint write fails, the
    command says which file and why in one line, and the last good checkpoint is kept byte for byte."""
    import resource

    first = config(tmp_path, stories, "full-disk", max_steps=4, ckpt_interval=4)
    train(first)
    ckpt_path = Path(first.out_dir) / "checkpoint.safetensors"
    before = ckpt_path.read_bytes()
    limit = len(before) // 2  # a new checkpoint cannot be written; the metrics log (a few KB) can

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    resumed = config(tmp_path, stories, "full-disk", max_steps=8, ckpt_interval=4, resume=True)
    result = subprocess.run([sys.executable, "-m", "nanogptoss", "train", *cli_args(resumed), "--resume"],
                            cwd=tmp_path, capture_output=True, text=True, preexec_fn=small_files, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line == (f"error: {ckpt_path}: File too large; the file is larger than this system allows (ulimit -f); "
                    "raise the limit or write elsewhere"), result.stderr[-3000:]
    assert ckpt_path.read_bytes() == before and Checkpoint(ckpt_path).step == 4
    assert not [p.name for p in ckpt_path.parent.iterdir() if ".tmp" in p.name]  # no half-written file left
