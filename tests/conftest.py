import pytest
import torch

from nanogptoss import GPTOSSConfig


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
