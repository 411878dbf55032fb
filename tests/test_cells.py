"""rnnlib.cells against torch.nn's cells (float64 parity of values and gradients) and behaviour tests."""
from __future__ import annotations

import ast
import inspect
import math

import pytest
import torch
from torch import nn

import rnnlib.cells as cells
from rnnlib.cells import GRUCell, LSTMCell, RNNCell, gru_step, lstm_step

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
D, H, N = 3, 5, 4

# (name, rnnlib class, torch class, constructor kwargs)
CASES = [
    ("rnn_tanh", RNNCell, nn.RNNCell, {"nonlinearity": "tanh"}),
    ("rnn_relu", RNNCell, nn.RNNCell, {"nonlinearity": "relu"}),
    ("rnn_nobias", RNNCell, nn.RNNCell, {"bias": False}),
    ("lstm", LSTMCell, nn.LSTMCell, {}),
    ("lstm_nobias", LSTMCell, nn.LSTMCell, {"bias": False}),
    ("gru", GRUCell, nn.GRUCell, {}),
    ("gru_nobias", GRUCell, nn.GRUCell, {"bias": False}),
]


def _pair(ours_cls, torch_cls, kwargs, load_into_ours=True):
    """A torch.nn cell and an rnnlib cell with the same float64 weights."""
    torch.manual_seed(0)
    ref = torch_cls(D, H, dtype=F64, **kwargs)
    ours = ours_cls(D, H, dtype=F64, **kwargs)
    if load_into_ours:
        ours.load_state_dict(ref.state_dict())
    else:
        ref.load_state_dict(ours.state_dict())
    return ours, ref


def _run(cell, x, hx, is_lstm):
    """Forward, then backward of a random weighted sum of the outputs; returns outputs and all grads."""
    x = x.clone().requires_grad_()
    hx = None if hx is None else tuple(s.clone().requires_grad_() for s in hx)
    arg = None if hx is None else (hx if is_lstm else hx[0])
    out = cell(x, arg)
    outs = out if is_lstm else (out,)
    gen = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=F64)).sum() for o in outs)
    loss.backward()
    grads = {name: p.grad for name, p in cell.named_parameters()}
    grads["input"] = x.grad
    for k, s in enumerate(hx or ()):
        grads[f"hx{k}"] = s.grad
    return outs, grads


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_state", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("load_into_ours", [True, False], ids=["nn_to_ours", "ours_to_nn"])
@pytest.mark.parametrize("name,ours_cls,torch_cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_cell_matches_torch(name, ours_cls, torch_cls, kwargs, batched, with_state, load_into_ours):
    ours, ref = _pair(ours_cls, torch_cls, kwargs, load_into_ours)
    is_lstm = ours_cls is LSTMCell
    lead = (N,) if batched else ()
    x = torch.randn(*lead, D, dtype=F64)
    hx = tuple(torch.randn(*lead, H, dtype=F64) for _ in range(2 if is_lstm else 1)) if with_state else None
    outs, grads = _run(ours, x, hx, is_lstm)
    ref_outs, ref_grads = _run(ref, x, hx, is_lstm)
    assert len(outs) == len(ref_outs)
    for o, r in zip(outs, ref_outs):
        assert o.shape == r.shape == (*lead, H)
        torch.testing.assert_close(o, r, **TOL)
    assert grads.keys() == ref_grads.keys()
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], **TOL, msg=f"gradient of {key}")


@pytest.mark.parametrize("name,ours_cls,torch_cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_parameters_and_init_match_torch(name, ours_cls, torch_cls, kwargs):
    torch.manual_seed(3)
    ref = torch_cls(D, H, **kwargs)
    torch.manual_seed(3)
    ours = ours_cls(D, H, **kwargs)
    ref_params = dict(ref.named_parameters())
    ours_params = dict(ours.named_parameters())
    assert list(ours_params) == list(ref_params)
    for key, p in ours_params.items():
        assert p.shape == ref_params[key].shape
        # Same draws in the same order from the same seed: PyTorch's init exactly.
        torch.testing.assert_close(p, ref_params[key], rtol=0, atol=0)
        assert p.abs().max() <= 1 / math.sqrt(H)
    assert repr(ours).split("(", 1)[1] == repr(ref).split("(", 1)[1]


def test_init_bounds_on_a_large_cell():
    cell = LSTMCell(40, 64)
    bound = 1 / math.sqrt(64)
    for p in cell.parameters():
        assert p.min() >= -bound and p.max() <= bound
        assert p.max() > 0.9 * bound and p.min() < -0.9 * bound   # uniform over the whole interval


def test_gru_paper_variant_equals_explicit_formula_and_differs_from_torch():
    torch.manual_seed(0)
    ref = nn.GRUCell(D, H, dtype=F64)
    paper = GRUCell(D, H, dtype=F64, reset_after=False)
    paper.load_state_dict(ref.state_dict())
    x, h = torch.randn(N, D, dtype=F64), torch.randn(N, H, dtype=F64)

    W_ir, W_iz, W_in = ref.weight_ih.detach().chunk(3)
    W_hr, W_hz, W_hn = ref.weight_hh.detach().chunk(3)
    b_ir, b_iz, b_in = ref.bias_ih.detach().chunk(3)
    b_hr, b_hz, b_hn = ref.bias_hh.detach().chunk(3)
    r = torch.sigmoid(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
    z = torch.sigmoid(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
    n = torch.tanh(x @ W_in.T + b_in + (r * h) @ W_hn.T + b_hn)    # Cho et al. (2014)
    expected = (1 - z) * n + z * h

    torch.testing.assert_close(paper(x, h), expected, **TOL)
    assert (paper(x, h) - ref(x, h)).abs().max() > 1e-3


def test_lstm_step_names_the_gates_in_torch_order():
    torch.manual_seed(0)
    ref = nn.LSTMCell(D, H, dtype=F64)
    x, h, c = (torch.randn(N, size, dtype=F64) for size in (D, H, H))
    pre = (x @ ref.weight_ih.T + ref.bias_ih + h @ ref.weight_hh.T + ref.bias_hh).detach()
    a_i, a_f, a_g, a_o = pre.chunk(4, dim=1)
    step = lstm_step(x @ ref.weight_ih.T.detach() + ref.bias_ih.detach(), h, c,
                     ref.weight_hh.detach(), ref.bias_hh.detach())
    torch.testing.assert_close(step.i, torch.sigmoid(a_i), **TOL)
    torch.testing.assert_close(step.f, torch.sigmoid(a_f), **TOL)
    torch.testing.assert_close(step.g, torch.tanh(a_g), **TOL)
    torch.testing.assert_close(step.o, torch.sigmoid(a_o), **TOL)
    torch.testing.assert_close(step.c, step.f * c + step.i * step.g, **TOL)
    torch.testing.assert_close(step.h, step.o * torch.tanh(step.c), **TOL)


def test_gru_step_names_the_gates_in_torch_order():
    torch.manual_seed(0)
    ref = nn.GRUCell(D, H, dtype=F64)
    x, h = torch.randn(N, D, dtype=F64), torch.randn(N, H, dtype=F64)
    x_r, x_z, x_n = (x @ ref.weight_ih.T + ref.bias_ih).detach().chunk(3, dim=1)
    h_r, h_z, h_n = (h @ ref.weight_hh.T + ref.bias_hh).detach().chunk(3, dim=1)
    step = gru_step((x @ ref.weight_ih.T + ref.bias_ih).detach(), h, ref.weight_hh.detach(), ref.bias_hh.detach())
    torch.testing.assert_close(step.r, torch.sigmoid(x_r + h_r), **TOL)
    torch.testing.assert_close(step.z, torch.sigmoid(x_z + h_z), **TOL)
    torch.testing.assert_close(step.n, torch.tanh(x_n + step.r * h_n), **TOL)
    torch.testing.assert_close(step.h, (1 - step.z) * step.n + step.z * h, **TOL)


def test_functions_equal_modules():
    torch.manual_seed(0)
    x, h, c = torch.randn(N, D, dtype=F64), torch.randn(N, H, dtype=F64), torch.randn(N, H, dtype=F64)
    rnn, lstm, gru = RNNCell(D, H, dtype=F64), LSTMCell(D, H, dtype=F64), GRUCell(D, H, dtype=F64)
    args = lambda m: (m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh)  # noqa: E731
    torch.testing.assert_close(cells.rnn_cell_step(x, h, *args(rnn), "tanh"), rnn(x, h), **TOL)
    for got, want in zip(cells.lstm_cell_step(x, h, c, *args(lstm)), lstm(x, (h, c))):
        torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(cells.gru_cell_step(x, h, *args(gru), reset_after=True), gru(x, h), **TOL)


@pytest.mark.parametrize("value", [1.0, -2.5])
def test_forget_bias_sets_the_forget_slice(value):
    cell = LSTMCell(D, H, forget_bias=value, dtype=F64)
    torch.testing.assert_close(cell.bias_ih[H:2 * H], torch.full((H,), value, dtype=F64))
    torch.testing.assert_close(cell.bias_hh[H:2 * H], torch.zeros(H, dtype=F64))
    bound = 1 / math.sqrt(H)
    for slice_ in (slice(0, H), slice(2 * H, 4 * H)):   # the i, g and o slices keep PyTorch's init
        assert cell.bias_ih[slice_].abs().max() <= bound
        assert cell.bias_hh[slice_].abs().max() > 0
    # The forget gate starts at sigmoid(value) for a zero input and state.
    step = lstm_step(torch.zeros(4 * H, dtype=F64) + cell.bias_ih, torch.zeros(H, dtype=F64),
                     torch.zeros(H, dtype=F64), cell.weight_hh, cell.bias_hh)
    torch.testing.assert_close(step.f, torch.full((H,), 1 / (1 + math.exp(-value)), dtype=F64))


def test_forget_bias_needs_bias():
    with pytest.raises(ValueError, match="bias=True"):
        LSTMCell(D, H, bias=False, forget_bias=1.0)


def test_invalid_nonlinearity():
    with pytest.raises(ValueError, match="sigmoid"):
        RNNCell(D, H, nonlinearity="sigmoid")


@pytest.mark.parametrize("cls", [RNNCell, LSTMCell, GRUCell])
def test_shape_errors_name_expected_and_given(cls):
    cell = cls(10, 20)
    with pytest.raises(ValueError, match=r"10 features.*\(32, 7\)"):
        cell(torch.randn(32, 7))
    with pytest.raises(ValueError, match=r"\(batch, 10\).*\(2, 3, 10\)"):
        cell(torch.randn(2, 3, 10))
    bad = torch.randn(5, 20)            # batch 5 for an input batch of 32
    hx = (bad, bad) if cls is LSTMCell else bad
    with pytest.raises(ValueError, match=r"\(32, 20\).*\(5, 20\)"):
        cell(torch.randn(32, 10), hx)
    bad = torch.randn(32, 19)           # wrong hidden size
    hx = (bad, bad) if cls is LSTMCell else bad
    with pytest.raises(ValueError, match=r"\(32, 20\).*\(32, 19\)"):
        cell(torch.randn(32, 10), hx)
    bad = torch.randn(1, 20)            # batched state for an unbatched input
    hx = (bad, bad) if cls is LSTMCell else bad
    with pytest.raises(ValueError, match=r"\(20,\).*\(1, 20\)"):
        cell(torch.randn(10), hx)
    with pytest.raises(ValueError, match="float64"):
        cell(torch.randn(32, 10, dtype=F64))


def test_lstm_cell_rejects_a_single_tensor_state():
    with pytest.raises(TypeError, match=r"\(h, c\)"):
        LSTMCell(D, H)(torch.randn(N, D), torch.randn(N, H))


def _attributes_used(module) -> set[str]:
    """Every attribute name the module's code (not its docstrings) looks up, e.g. ``F.linear`` -> linear."""
    tree = ast.parse(inspect.getsource(module))
    return {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}


def test_no_torch_recurrent_kernels_inside():
    import rnnlib.layers as layers

    kernels = {"_VF", "lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell", "gru_cell", "rnn_tanh_cell",
               "rnn_relu_cell", "mkldnn_rnn_layer", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell"}
    modules = {"RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"}
    assert not _attributes_used(cells) & (kernels | modules)
    # layers.py names nn.LSTM / nn.GRU only so that trace_gates accepts torch's modules.
    assert not _attributes_used(layers) & (kernels | {"RNN", "RNNCell", "LSTMCell", "GRUCell"})
