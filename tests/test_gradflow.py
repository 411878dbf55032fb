"""rnnlib.gradflow against plain autograd loops and known spectra."""
from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from rnnlib.gradflow import (
    analytic_rnn_jacobians,
    fit_decay_rate,
    grad_norms_vs_distance,
    jacobian_norms,
    recurrent_weight,
    state_grad_norms,
    step_jacobians,
)

DT = torch.float64

# float64 everywhere: what differs beyond rounding is a bug.
assert_close64 = functools.partial(torch.testing.assert_close, rtol=1e-10, atol=1e-10)


def reference_norms(cell, x, v, is_lstm, loss_fn=None):
    """A plain autograd loop over a cell: retain every state's grad, L = sum_b H_T[b] . v."""
    T, B, _ = x.shape
    H = cell.hidden_size
    h = torch.zeros(B, H, dtype=x.dtype)
    c = torch.zeros(B, H, dtype=x.dtype)
    hs, cs = [], []
    for t in range(T):
        if is_lstm:
            h, c = cell(x[t], (h, c))
            c.retain_grad()
            cs.append(c)
        else:
            h = cell(x[t], h)
        h.retain_grad()
        hs.append(h)
    L = (hs[-1] @ v).sum() if loss_fn is None else loss_fn(torch.stack(hs))
    L.backward()
    out = {"h": torch.stack([s.grad.norm(dim=1).mean() for s in hs])}
    if is_lstm:
        out["c"] = torch.stack([s.grad.norm(dim=1).mean() for s in cs])
    return out


def cell_from_layer(layer):
    """The torch.nn cell with the same weights as a one-layer torch.nn layer."""
    kind = type(layer).__name__
    kwargs = {"nonlinearity": layer.nonlinearity} if kind == "RNN" else {}
    cell = getattr(nn, kind + "Cell")(layer.input_size, layer.hidden_size, dtype=DT, **kwargs)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(layer, name + "_l0"))
    return cell


def projection_vector(H):
    # state_grad_norms(seed=0) draws v this way; reproduced so the reference is independent.
    g = torch.Generator().manual_seed(0)
    return torch.randn(H, generator=g, dtype=DT) / math.sqrt(H)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_state_grad_norms_match_a_plain_autograd_loop(kind):
    torch.manual_seed(0)
    layer = getattr(nn, kind)(3, 5, dtype=DT)
    x = torch.randn(7, 4, 3, dtype=DT)
    ours = state_grad_norms(layer, x)
    ref = reference_norms(cell_from_layer(layer), x, projection_vector(5), kind == "LSTM")
    assert set(ours) == set(ref)
    for key in ref:
        assert ours[key].shape == (7,)
        assert_close64(ours[key], ref[key])
    # The cell itself gives the same numbers.
    for key, value in state_grad_norms(cell_from_layer(layer), x).items():
        assert_close64(value, ref[key])


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_state_grad_norms_with_a_callable_loss_include_the_direct_path(kind):
    torch.manual_seed(1)
    layer = getattr(nn, kind)(2, 4, dtype=DT)
    x = torch.randn(6, 3, 2, dtype=DT)
    loss = lambda out: (out**2).sum()  # every step contributes directly
    ours = state_grad_norms(layer, x, loss=loss)
    ref = reference_norms(cell_from_layer(layer), x, None, kind == "LSTM", loss_fn=loss)
    for key in ref:
        assert_close64(ours[key], ref[key])
    # With only the last state in the loss, the gradients differ (no direct terms).
    assert not torch.allclose(ours["h"], state_grad_norms(layer, x)["h"])


def test_state_grad_norms_batch_first_initial_state_and_float32():
    torch.manual_seed(2)
    layer = nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)  # (B, T, D)
    h0, c0 = torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    ours = state_grad_norms(layer, x, (h0, c0))
    assert ours["h"].dtype == torch.float32 and ours["c"].shape == (5,)
    double = nn.LSTM(3, 4, batch_first=True, dtype=DT)
    double.load_state_dict({k: v.to(DT) for k, v in layer.state_dict().items()})
    ref = state_grad_norms(double, x.to(DT), (h0.to(DT), c0.to(DT)))
    torch.testing.assert_close(ours["h"].to(DT), ref["h"], rtol=1e-4, atol=1e-6)
    # The initial state matters.
    assert not torch.allclose(ours["h"], state_grad_norms(layer, x)["h"])


def test_state_grad_norms_rejects_stacked_and_bidirectional_layers():
    x = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match="one-layer"):
        state_grad_norms(nn.GRU(3, 4, num_layers=2), x)
    with pytest.raises(ValueError, match="one-layer"):
        state_grad_norms(nn.GRU(3, 4, bidirectional=True), x)
    with pytest.raises(ValueError, match=r"\(seq_len, batch, 3\)"):
        state_grad_norms(nn.GRU(3, 4), x[0])
    with pytest.raises(ValueError, match="loss must be"):
        state_grad_norms(nn.GRU(3, 4), x, loss="first")


def test_rnnlib_layers_give_the_same_norms():
    from rnnlib import layers

    torch.manual_seed(3)
    x = torch.randn(6, 2, 3, dtype=DT)
    for kind in ("RNN", "LSTM", "GRU"):
        theirs = getattr(nn, kind)(3, 4, dtype=DT)
        ours = getattr(layers, kind)(3, 4, dtype=DT)
        ours.load_state_dict(theirs.state_dict())
        a, b = state_grad_norms(ours, x), state_grad_norms(theirs, x)
        for key in b:
            assert_close64(a[key], b[key])
    rnn = layers.RNN(3, 4, dtype=DT)
    assert_close64(step_jacobians(rnn, x[:, :1]), analytic_rnn_jacobians(rnn, x[:, :1]))


def test_small_spectral_radius_vanishes_large_radius_relu_explodes():
    small = grad_norms_vs_distance(0.5, "tanh", seq_len=30, hidden_size=16)
    assert small.shape == (30,)
    assert torch.all(small[1:] < small[:-1])  # strictly decreasing with distance
    assert small[-1] / small[0] < 1e-6
    large = grad_norms_vs_distance(3.0, "relu", seq_len=30, hidden_size=16)
    assert large[-1] / large[0] > 1e6
    # |tanh'| <= 1 and the orthogonal W_hh has all singular values 0.5: the decay is at least 0.5 per step.
    assert fit_decay_rate(small) <= 0.5 + 1e-9


@pytest.mark.parametrize("kind", ["orthogonal", "gaussian", "nonnormal"])
@pytest.mark.parametrize("radius", [0.5, 1.0, 2.5])
def test_recurrent_weight_has_the_requested_spectral_radius(kind, radius):
    W = recurrent_weight(24, radius, seed=4, kind=kind, dtype=DT)
    assert W.shape == (24, 24)
    assert_close64(torch.linalg.eigvals(W).abs().max(), torch.tensor(radius, dtype=DT))
    if kind == "orthogonal":
        assert_close64(W @ W.T, radius**2 * torch.eye(24, dtype=DT))
    assert torch.equal(W, recurrent_weight(24, radius, seed=4, kind=kind, dtype=DT))
    assert not torch.equal(W, recurrent_weight(24, radius, seed=5, kind=kind, dtype=DT))


def test_nonnormal_recurrent_weight_keeps_the_radius_and_stretches_more():
    """Every eigenvalue has modulus rho, but the strictly upper part of the Schur form raises the spectral
    norm above rho; without it (shear=0) the matrix is normal and its norm is rho."""
    for shear, seed in ((1.0, 0), (2.0, 3)):
        W = recurrent_weight(16, 0.9, seed=seed, kind="nonnormal", shear=shear, dtype=DT)
        assert_close64(torch.linalg.eigvals(W).abs(), torch.full((16,), 0.9, dtype=DT))
        assert torch.linalg.matrix_norm(W, ord=2) > 1.5 * 0.9 * shear
        assert (W @ W.T - W.T @ W).abs().max() > 0.1        # not normal
    normal = recurrent_weight(16, 0.9, kind="nonnormal", shear=0.0, dtype=DT)
    assert_close64(normal @ normal.T, normal.T @ normal)
    assert_close64(torch.linalg.svdvals(normal), torch.full((16,), 0.9, dtype=DT))
    # A stronger shear, the same eigenvalues: the linear powers W^k grow for a while before they decay.
    W = recurrent_weight(16, 0.9, kind="nonnormal", shear=2.0, dtype=DT)
    powers = [torch.linalg.matrix_norm(torch.linalg.matrix_power(W, k), ord=2).item() for k in (1, 5, 200)]
    assert powers[1] > powers[0] > 1 and powers[2] < 1e-3


def test_recurrent_weight_errors():
    with pytest.raises(ValueError, match="kind"):
        recurrent_weight(4, 1.0, kind="uniform")
    with pytest.raises(ValueError, match="non-negative"):
        recurrent_weight(4, -1.0)
    with pytest.raises(ValueError, match="even hidden_size"):
        recurrent_weight(5, 1.0, kind="nonnormal")
    with pytest.raises(ValueError, match="shear"):
        recurrent_weight(4, 1.0, kind="nonnormal", shear=-1.0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("module", ["layer", "cell"])
def test_step_jacobians_equal_the_analytic_rnn_jacobians(nonlinearity, module):
    torch.manual_seed(5)
    if module == "layer":
        m = nn.RNN(3, 6, nonlinearity=nonlinearity, dtype=DT)
    else:
        m = nn.RNNCell(3, 6, nonlinearity=nonlinearity, dtype=DT)
    x = torch.randn(8, 3, dtype=DT)
    J = step_jacobians(m, x)
    assert J.shape == (8, 6, 6)
    assert_close64(J, analytic_rnn_jacobians(m, x))
    # After one step the product is J_1 = diag(phi'(A_1)) weight_hh, from the first state alone.
    weight_hh = m.weight_hh_l0 if module == "layer" else m.weight_hh
    with torch.no_grad():
        h1 = (m(x[:1].unsqueeze(1))[0][0, 0]) if module == "layer" else m(x[0])
    d = 1 - h1**2 if nonlinearity == "tanh" else (h1 > 0).to(DT)
    J1 = d[:, None] * weight_hh.detach()
    out = jacobian_norms(m, x)
    assert_close64(out["spectral_norm"][0], torch.linalg.matrix_norm(J1, ord=2))
    assert_close64(out["spectral_radius"][0], torch.linalg.eigvals(J1).abs().max())


def test_jacobian_norms_products_in_both_directions():
    torch.manual_seed(6)
    m = nn.GRU(2, 3, dtype=DT)
    x = torch.randn(5, 1, 2, dtype=DT)
    J = step_jacobians(m, x)
    forward = jacobian_norms(m, x)
    backward = jacobian_norms(m, x, from_end=True)
    assert_close64(forward["spectral_norm"][2], torch.linalg.matrix_norm(J[2] @ J[1] @ J[0], ord=2))
    assert_close64(backward["spectral_norm"][2], torch.linalg.matrix_norm(J[4] @ J[3] @ J[2], ord=2))
    assert_close64(forward["spectral_norm"][-1], backward["spectral_norm"][-1])


def test_lstm_jacobian_covers_hidden_and_cell_state():
    torch.manual_seed(7)
    m = nn.LSTM(2, 3, dtype=DT)
    x = torch.randn(4, 2, dtype=DT)
    J = step_jacobians(m, x)
    assert J.shape == (4, 6, 6)
    # dc_t/dc_{t-1} = diag(f_t): diagonal, entries in (0, 1).
    dc_dc = J[0, 3:, 3:]
    assert_close64(dc_dc, torch.diag(torch.diagonal(dc_dc)))
    assert torch.all((torch.diagonal(dc_dc) > 0) & (torch.diagonal(dc_dc) < 1))
    with pytest.raises(ValueError, match="batch 1"):
        step_jacobians(m, torch.randn(4, 2, 2, dtype=DT))
    with pytest.raises(ValueError, match="Elman"):
        analytic_rnn_jacobians(m, x)


def test_linear_regime_gradient_decays_at_the_spectral_radius():
    # Tiny inputs keep tanh near its linear regime, where J_t ~ W_hh^T and an orthogonal W_hh scaled
    # by rho shrinks every gradient by exactly rho per step.
    torch.manual_seed(8)
    rnn = nn.RNN(2, 10, dtype=DT)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(recurrent_weight(10, 0.8, dtype=DT))
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    x = 1e-6 * torch.randn(20, 3, 2, dtype=DT)
    norms = state_grad_norms(rnn, x)["h"].flip(0)
    assert fit_decay_rate(norms) == pytest.approx(0.8, rel=1e-6)


def test_fit_decay_rate_recovers_a_known_rate():
    d = torch.arange(25, dtype=DT)
    assert fit_decay_rate(3.0 * 0.7**d) == pytest.approx(0.7, rel=1e-12)
    assert fit_decay_rate(0.01 * 1.3**d) == pytest.approx(1.3, rel=1e-12)
    noisy = 2.0 * 0.9**d * torch.exp(0.01 * torch.randn(25, generator=torch.Generator().manual_seed(0), dtype=DT))
    assert fit_decay_rate(noisy) == pytest.approx(0.9, rel=1e-2)
    with pytest.raises(ValueError, match="positive and finite"):
        fit_decay_rate(torch.tensor([1.0, 0.0, 0.5]))
    with pytest.raises(ValueError, match="at least two"):
        fit_decay_rate(torch.tensor([1.0]))
