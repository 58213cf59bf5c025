import pytest
import torch
from transformers.models.gpt_oss.modeling_gpt_oss import load_balancing_loss_func

from nanogptoss import Router, load_balancing_loss
from nanogptoss.model.router import expert_counts


def make_router(E=6, k=2, d=8):
    router = Router(d, E, k)
    with torch.no_grad():
        router.weight.normal_()
        router.bias.normal_()
    return router


def test_top_k_and_softmax_over_the_chosen_only():
    router = make_router()
    x = torch.randn(20, 8)
    out = router(x)
    logits = x @ router.weight.T + router.bias
    torch.testing.assert_close(out.logits, logits)
    top = logits.sort(dim=-1, descending=True)
    assert torch.equal(out.indices, top.indices[:, :2])
    torch.testing.assert_close(out.weights, torch.softmax(top.values[:, :2], dim=-1))
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(20))
    # not a softmax over all experts: those weights would sum to less than 1
    assert not torch.allclose(out.weights, torch.softmax(logits, -1).gather(1, out.indices))


def test_top1_router_gets_no_gradient_top2_does():
    x = torch.randn(16, 8)
    for k, learns in ((1, False), (2, True)):
        router = make_router(k=k)
        out = router(x)
        (out.weights * torch.randn_like(out.weights)).sum().backward()
        assert (router.weight.grad.abs().sum() > 0) == learns


@pytest.mark.parametrize("k", [1, 2, 4])
def test_load_balancing_loss_matches_transformers(k):
    logits = [torch.randn(30, 8) for _ in range(3)]
    expected = load_balancing_loss_func(tuple(logits), num_experts=8, top_k=k)
    torch.testing.assert_close(load_balancing_loss(logits, 8, k), expected)


def test_load_balancing_loss_is_smallest_for_uniform_routing():
    uniform = torch.zeros(64, 4)
    assert load_balancing_loss(uniform, 4, 2).item() == pytest.approx(2.0)  # E * sum(k/E * 1/E) = k
    skewed = torch.zeros(64, 4)
    skewed[:, 0] = 5.0
    assert load_balancing_loss(skewed, 4, 2) > load_balancing_loss(uniform, 4, 2)


def test_expert_counts():
    idx = torch.tensor([[0, 2], [2, 1], [2, 0]])
    assert expert_counts(idx, 4).tolist() == [2, 1, 3, 0]


def test_bad_top_k():
    with pytest.raises(ValueError, match="experts_per_token"):
        Router(8, 4, 5)
