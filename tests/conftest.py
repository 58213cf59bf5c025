from pathlib import Path

import pytest
import torch

from nanogptoss import GPTOSSConfig
from nanogptoss.training.train import TrainConfig


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_gptoss(**overrides):
    """A GPT-OSS small enough for a unit test, with a window shorter than the test sequences."""
    settings = dict(vocab_size=97, max_position_embeddings=64, num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=16, num_experts=4, experts_per_token=2, intermediate_size=24, sliding_window=8)
    settings.update(overrides)
    return GPTOSSConfig(**settings)


def randomize_(model, std=0.1):
    """Give every parameter non-trivial random values (norm scales around 1, sinks,
    biases), so a comparison exercises every term instead of zeros and ones."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.5 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.normal_(0.0, std)
    return model


# -- a tiny training run on a small file of stories, shared by the trainer tests ----------

TINY = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            intermediate_size=32, max_position_embeddings=32, sliding_window=8)


@pytest.fixture(scope="session")
def stories(tmp_path_factory):
    path = tmp_path_factory.mktemp("stories") / "stories.txt"
    names, things = ["Lily", "Tom", "Sam", "Mia", "Ben"], ["ball", "cat", "kite", "cake", "boat"]
    text = [f"Once upon a time, {n} had a {t}. {n} loved the {t}. One day the {t} was lost. "
            f"{n} was sad. Then {n} found the {t} again. The end."
            for i in range(400) for n, t in [(names[i % 5], things[(i * 3) % 5])]]
    path.write_text("<|endoftext|>".join(text))
    return path


def config(tmp, stories, name, **kw):
    base = dict(data=str(stories), overrides=dict(TINY), batch_size=4, max_steps=12, warmup_steps=3,
                eval_interval=6, eval_tokens=256, ckpt_interval=4, out_dir=str(tmp / "runs" / name),
                data_dir=str(tmp / "data"), progress=False)
    base.update(kw)
    return TrainConfig(**base)


def cli_args(cfg: TrainConfig) -> list[str]:
    args = ["--data", cfg.data, "--batch-size", str(cfg.batch_size), "--max-steps", str(cfg.max_steps),
            "--warmup-steps", str(cfg.warmup_steps), "--eval-interval", str(cfg.eval_interval),
            "--eval-tokens", str(cfg.eval_tokens), "--ckpt-interval", str(cfg.ckpt_interval),
            "--out-dir", cfg.out_dir, "--data-dir", cfg.data_dir, "--no-progress",
            "--grad-accum", str(cfg.grad_accum)]
    for name, value in cfg.overrides.items():
        args += ["--set", f"{name}={value}"]
    return args
