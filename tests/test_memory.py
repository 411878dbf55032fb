"""rnnlib.memory: saved-tensor bytes, and the segmented backward (full, truncated, checkpointed) in float64."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlib.memory import saved_tensor_bytes, segmented_lm_backward, tensor_bytes
from rnnlib.models import CharLM
from rnnlib.profiling import AllocationTracker

DT = torch.float64


def grads_after(method, cell="lstm", segment=4, T=12, impl="torch"):
    torch.manual_seed(0)
    model = CharLM(7, hidden_size=6, cell=cell, embedding_dim=5, impl=impl).to(DT)
    g = torch.Generator().manual_seed(1)
    X, Y = torch.randint(0, 7, (3, T), generator=g), torch.randint(0, 7, (3, T), generator=g)
    loss = segmented_lm_backward(model, X, Y, segment, method)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters()}, model, X, Y


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("impl", ["torch", "rnnlib"])
def test_full_and_checkpointed_gradients_equal_autograd_on_the_whole_sequence(cell, impl):
    loss, full, model, X, Y = grads_after("full", cell, impl=impl)
    model.zero_grad()
    logits, _ = model(X)
    reference = nn.functional.cross_entropy(logits.reshape(-1, 7), Y.reshape(-1))
    reference.backward()
    assert loss == pytest.approx(float(reference.detach()), rel=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(full[name], p.grad, rtol=1e-10, atol=1e-12)
    ck_loss, checkpointed, *_ = grads_after("checkpoint", cell, impl=impl)
    assert ck_loss == pytest.approx(loss, rel=1e-12)
    for name in full:
        torch.testing.assert_close(checkpointed[name], full[name], rtol=1e-10, atol=1e-12)


def test_truncated_gradient_is_the_sum_of_per_segment_gradients_with_detached_states():
    loss, truncated, model, X, Y = grads_after("truncated", segment=5, T=12)   # segments 5, 5, 2
    model.zero_grad()
    state, total = None, 0.0
    for start in range(0, 12, 5):
        logits, state = model(X[:, start:start + 5], state)
        part = nn.functional.cross_entropy(logits.reshape(-1, 7), Y[:, start:start + 5].reshape(-1),
                                           reduction="sum") / X.numel()
        part.backward()
        total += float(part.detach())
        state = tuple(s.detach() for s in state)
    assert loss == pytest.approx(total, rel=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(truncated[name], p.grad, rtol=1e-10, atol=1e-12)
    _, full, *_ = grads_after("full", T=12)
    # The loss is the same, the gradient is not: the terms that cross a segment boundary are missing.
    assert not torch.allclose(truncated["rnn.weight_hh_l0"], full["rnn.weight_hh_l0"])


def test_peak_memory_grows_with_T_for_full_bptt_only():
    def peak(method, T):
        torch.manual_seed(0)
        model = CharLM(11, hidden_size=32, embedding_dim=8)
        X = torch.randint(0, 11, (4, T))
        segmented_lm_backward(model, X, X, 16, method)  # warm-up
        model.zero_grad(set_to_none=True)
        with AllocationTracker() as mem:
            segmented_lm_backward(model, X, X, 16, method)
        return mem.peak

    assert peak("full", 256) > 3 * peak("full", 64)
    for method in ("truncated", "checkpoint"):
        assert peak(method, 256) < 1.3 * peak(method, 64)
        assert peak(method, 256) < peak("full", 256) / 2


def test_saved_tensor_bytes_and_tensor_bytes():
    w = torch.randn(100, 50, requires_grad=True)
    x = torch.randn(8, 100)
    # x @ w saves x (for w's gradient); w is excluded; tanh saves its output (8 x 50).
    n = saved_tensor_bytes(lambda: torch.tanh(x @ w), exclude=[w])
    assert n == x.numel() * 4 + 8 * 50 * 4
    sparse = torch.sparse_coo_tensor(torch.tensor([[0, 3, 3]]), torch.ones(3, 4), (10, 4),
                                     check_invariants=True)
    assert tensor_bytes(sparse) == 3 * 8 + 3 * 4 * 4
    assert tensor_bytes(torch.zeros(10, 4)) == 160


def test_bad_arguments_are_named():
    model = CharLM(5, hidden_size=4, embedding_dim=3)
    X = torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(ValueError, match="method"):
        segmented_lm_backward(model, X, X, 2, "sideways")
    with pytest.raises(ValueError, match="segment"):
        segmented_lm_backward(model, X, X, None, "checkpoint")
    with pytest.raises(ValueError, match="same shape"):
        segmented_lm_backward(model, X, X[:, :3], 2, "full")
