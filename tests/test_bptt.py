"""Manual BPTT (rnnlib.bptt) against autograd and nn.RNN, in float64."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from rnnlib.bptt import (
    RNNParams,
    bptt,
    contribution_matrix,
    forward,
    output_layer,
    output_layer_backward,
    rnn_step,
    rnn_step_backward,
)

DT = torch.float64

# float64 everywhere: what differs beyond rounding is a bug.
assert_close64 = functools.partial(torch.testing.assert_close, rtol=1e-10, atol=1e-10)


def make_problem(T, B, D, H, Q, loss, seed=0, with_h0=False):
    g = torch.Generator().manual_seed(seed)
    params = RNNParams.init(D, H, Q, generator=g, dtype=DT)
    # Larger weights than the default init so that long-range terms are not negligible.
    params.W_hh = params.W_hh * 3
    X = torch.randn(T, B, D, generator=g, dtype=DT)
    if loss == "cross_entropy":
        Y = torch.randint(0, Q, (T, B), generator=g)
    else:
        Y = torch.randn(T, B, Q, generator=g, dtype=DT)
    H0 = torch.randn(B, H, generator=g, dtype=DT) if with_h0 else None
    return X, Y, params, H0


def autograd_reference(X, Y, params, H0, loss, truncate=None):
    """The same model written with autograd, detaching the state at chunk boundaries."""
    P = {k: v.clone().requires_grad_() for k, v in params.as_dict().items()}
    T, B, _ = X.shape
    h = torch.zeros(B, P["W_hh"].shape[0], dtype=DT) if H0 is None else H0.clone()
    h.requires_grad_()
    h_init = h
    states, outputs = [], []
    for t in range(1, T + 1):
        h = torch.tanh(X[t - 1] @ P["W_xh"] + h @ P["W_hh"] + P["b_h"])
        h.retain_grad()
        states.append(h)
        outputs.append(h @ P["W_hq"] + P["b_q"])
        if truncate is not None and t % truncate == 0:
            h = h.detach()
    O = torch.stack(outputs)
    if loss == "cross_entropy":
        L = F.cross_entropy(O.reshape(T * B, -1), Y.reshape(-1))
    else:
        L = F.mse_loss(O, Y)
    L.backward()
    dH = torch.stack([s.grad for s in states])
    return L.detach(), {k: v.grad for k, v in P.items()}, dH, h_init.grad, O.detach()


SHAPES = [(1, 1, 1, 1, 2), (5, 3, 4, 6, 7), (12, 2, 3, 5, 4)]


def test_each_backward_matches_autograd_on_its_own_forward():
    """micrograd's unit test, per operation: backprop a random upstream gradient through one op by hand
    and with autograd."""
    X, _, params, _ = make_problem(3, 4, 5, 6, 7, "mse", seed=3)
    P = {k: v.clone().requires_grad_() for k, v in params.as_dict().items()}
    leaf = RNNParams(**P)
    g = torch.Generator().manual_seed(4)
    x_t = X[0]
    h_prev = torch.randn(4, 6, dtype=DT, generator=g, requires_grad=True)
    h_t = rnn_step(x_t, h_prev, leaf)
    dh_t = torch.randn_like(h_t)
    h_t.backward(dh_t)
    dh_prev, dW_xh, dW_hh, db_h = rnn_step_backward(dh_t, x_t, h_prev.detach(), h_t.detach(), params)
    for mine, theirs in ((dh_prev, h_prev.grad), (dW_xh, P["W_xh"].grad), (dW_hh, P["W_hh"].grad), (db_h, P["b_h"].grad)):
        assert_close64(mine, theirs)

    H = torch.randn(3, 4, 6, dtype=DT, generator=g, requires_grad=True)
    O = output_layer(H, leaf)
    dO = torch.randn_like(O)
    O.backward(dO)
    dH, dW_hq, db_q = output_layer_backward(dO, H.detach(), params)
    for mine, theirs in ((dH, H.grad), (dW_hq, P["W_hq"].grad), (db_q, P["b_q"].grad)):
        assert_close64(mine, theirs)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_h0", [False, True])
def test_bptt_matches_autograd(loss, shape, with_h0):
    X, Y, params, H0 = make_problem(*shape, loss=loss, with_h0=with_h0)
    res = bptt(X, Y, params, H0=H0, loss=loss)
    L, grads, dH, dH0, O = autograd_reference(X, Y, params, H0, loss)
    assert_close64(res.loss, L)
    assert set(res.grads) == {"W_xh", "W_hh", "b_h", "W_hq", "b_q"}
    for name in grads:
        assert_close64(res.grads[name], grads[name], msg=name)
    assert_close64(res.dH, dH)
    assert_close64(res.dH0, dH0)
    assert_close64(forward(X, params, H0)[0], O)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_per_step_contributions_sum_to_gradient(loss):
    X, Y, params, H0 = make_problem(9, 3, 2, 4, 5, loss=loss, with_h0=True)
    res = bptt(X, Y, params, H0=H0, loss=loss)
    assert res.W_hh_per_step.shape == (9, 4, 4)
    assert_close64(res.W_hh_per_step.sum(0), res.grads["W_hh"])
    # The contribution of step t is H_{t-1}^T (dH_t * (1 - H_t^2)).
    _, H, _ = forward(X, params, H0)
    t = 4
    assert_close64(res.W_hh_per_step[t - 1], H[t - 1].T @ (res.dH[t - 1] * (1 - H[t] ** 2)))


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("truncate", [1, 3, 4])
def test_truncated_bptt_matches_detached_autograd(loss, truncate):
    X, Y, params, H0 = make_problem(10, 2, 3, 5, 4, loss=loss, with_h0=True)
    res = bptt(X, Y, params, H0=H0, loss=loss, truncate=truncate)
    L, grads, dH, dH0, _ = autograd_reference(X, Y, params, H0, loss, truncate=truncate)
    assert_close64(res.loss, L)
    for name in grads:
        assert_close64(res.grads[name], grads[name], msg=name)
    assert_close64(res.dH, dH)
    assert_close64(res.dH0, dH0)
    assert_close64(res.W_hh_per_step.sum(0), res.grads["W_hh"])

    full = bptt(X, Y, params, H0=H0, loss=loss)
    assert_close64(full.loss, res.loss)  # truncation changes gradients, not the loss
    assert not torch.allclose(full.grads["W_hh"], res.grads["W_hh"])
    assert not torch.allclose(full.grads["W_xh"], res.grads["W_xh"])
    # The output layer only sees H_t, which truncation does not change.
    assert_close64(full.grads["W_hq"], res.grads["W_hq"])
    # The last chunk receives no gradient from beyond the sequence, so its dH are unaffected.
    last = ((10 - 1) // truncate) * truncate
    assert_close64(full.dH[last:], res.dH[last:])


def test_truncate_longer_than_sequence_is_full_bptt():
    X, Y, params, H0 = make_problem(6, 2, 3, 4, 5, loss="cross_entropy")
    a, b = bptt(X, Y, params), bptt(X, Y, params, truncate=6)
    assert_close64(a.grads["W_hh"], b.grads["W_hh"])
    assert_close64(a.dH, b.dH)


def test_contribution_matrix_structure():
    # With H0 = 0 the first column would vanish (H_0^T dA_1 = 0), so start from a random state.
    X, Y, params, H0 = make_problem(8, 2, 3, 4, 5, loss="mse", with_h0=True)
    full = contribution_matrix(X, Y, params, H0=H0, loss="mse")
    assert full.shape == (8, 8)
    assert torch.all(torch.triu(full, diagonal=1) == 0)
    lower = torch.ones(8, 8, dtype=torch.bool).tril()
    assert torch.all(full[lower] > 0)
    trunc = contribution_matrix(X, Y, params, H0=H0, loss="mse", truncate=3)
    chunk = torch.arange(8) // 3
    same_chunk = chunk[:, None] == chunk[None, :]
    assert_close64(trunc[same_chunk], full[same_chunk])
    assert torch.all(trunc[~same_chunk] == 0)


def per_step_copies_reference(X, Y, params, loss, truncate=None):
    """Autograd with a separate copy of W_hh for each step: the grad of copy t from loss term s is entry [s, t]."""
    T, B, _ = X.shape
    norms = torch.zeros(T, T, dtype=DT)
    for s in range(1, T + 1):
        copies = [params.W_hh.clone().requires_grad_() for _ in range(T)]
        h = torch.zeros(B, params.W_hh.shape[0], dtype=DT)
        for t in range(1, s + 1):
            h = torch.tanh(X[t - 1] @ params.W_xh + h @ copies[t - 1] + params.b_h)
            if truncate is not None and t % truncate == 0 and t < s:
                h = h.detach()
        O_s = h @ params.W_hq + params.b_q
        if loss == "cross_entropy":
            ell = F.cross_entropy(O_s, Y[s - 1], reduction="sum") / (T * B)
        else:
            ell = ((O_s - Y[s - 1]) ** 2).sum() / Y.numel()
        ell.backward()
        for t in range(1, s + 1):
            if copies[t - 1].grad is not None:
                norms[s - 1, t - 1] = torch.linalg.matrix_norm(copies[t - 1].grad)
    return norms


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("truncate", [None, 2])
def test_contribution_matrix_matches_autograd_with_per_step_weights(loss, truncate):
    X, Y, params, _ = make_problem(6, 2, 3, 4, 5, loss=loss, seed=3)
    ours = contribution_matrix(X, Y, params, loss=loss, truncate=truncate)
    assert_close64(ours, per_step_copies_reference(X, Y, params, loss, truncate))


def test_no_autograd_graph_even_when_inputs_require_grad():
    X, Y, params, H0 = make_problem(4, 2, 3, 4, 5, loss="cross_entropy", with_h0=True)
    for t in (X, *params.as_dict().values()):
        assert not t.requires_grad
    res = bptt(X, Y, params, H0=H0)
    assert res.loss.grad_fn is None
    leafy = RNNParams(**{k: v.clone().requires_grad_() for k, v in params.as_dict().items()})
    res2 = bptt(X.clone().requires_grad_(), Y, leafy, H0=H0)
    assert res2.loss.grad_fn is None and not res2.grads["W_hh"].requires_grad
    assert_close64(res2.grads["W_hh"], res.grads["W_hh"])


def test_from_torch_round_trip_matches_nn_rnn():
    torch.manual_seed(0)
    rnn = torch.nn.RNN(3, 5, dtype=DT)
    linear = torch.nn.Linear(5, 4, dtype=DT)
    X = torch.randn(7, 2, 3, dtype=DT)
    H0 = torch.randn(2, 5, dtype=DT)
    params = RNNParams.from_torch(rnn, linear)
    assert params.sizes == (3, 5, 4)
    O, H, _ = forward(X, params, H0)
    with torch.no_grad():
        out, h_n = rnn(X, H0.unsqueeze(0))
        assert_close64(O, linear(out))
    assert_close64(H[1:], out)
    assert_close64(H[-1], h_n[0])

    rnn2, linear2 = params.to_torch()
    with torch.no_grad():
        out2, _ = rnn2(X, H0.unsqueeze(0))
        assert_close64(linear2(out2), O)
    back = RNNParams.from_torch(rnn2, linear2)
    for name, value in params.as_dict().items():
        assert_close64(getattr(back, name), value)


def test_bptt_matches_autograd_through_nn_rnn():
    X, Y, params, H0 = make_problem(6, 3, 2, 4, 5, loss="cross_entropy", with_h0=True)
    rnn, linear = params.to_torch()
    out, _ = rnn(X, H0.unsqueeze(0))
    O = linear(out)
    F.cross_entropy(O.reshape(-1, 5), Y.reshape(-1)).backward()
    res = bptt(X, Y, params, H0=H0)
    assert_close64(res.grads["W_xh"], rnn.weight_ih_l0.grad.T)
    assert_close64(res.grads["W_hh"], rnn.weight_hh_l0.grad.T)
    assert_close64(res.grads["b_h"], rnn.bias_hh_l0.grad)
    assert_close64(res.grads["W_hq"], linear.weight.grad.T)
    assert_close64(res.grads["b_q"], linear.bias.grad)


def test_from_torch_rejects_unsupported_modules():
    with pytest.raises(ValueError, match="num_layers=1"):
        RNNParams.from_torch(torch.nn.RNN(2, 3, num_layers=2), torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNParams.from_torch(torch.nn.RNN(2, 3, nonlinearity="relu"), torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match="in_features"):
        RNNParams.from_torch(torch.nn.RNN(2, 3), torch.nn.Linear(4, 2))


def test_errors_are_actionable():
    X, Y, params, _ = make_problem(4, 2, 3, 4, 5, loss="cross_entropy")
    with pytest.raises(ValueError, match=r"\(seq_len, batch, 3\)"):
        bptt(X[0], Y, params)
    with pytest.raises(ValueError, match="H0 of shape"):
        bptt(X, Y, params, H0=torch.zeros(3, 4, dtype=DT))
    with pytest.raises(ValueError, match="loss must be one of"):
        bptt(X, Y, params, loss="hinge")
    with pytest.raises(ValueError, match="integer targets"):
        bptt(X, Y.to(DT), params)
    with pytest.raises(ValueError, match="mse expects"):
        bptt(X, Y, params, loss="mse")
    with pytest.raises(ValueError, match="truncate"):
        bptt(X, Y, params, truncate=0)
