"""rnnlib.layers against torch.nn.RNN/LSTM/GRU (float64 parity of outputs, states and gradients) and behaviour."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnlib.cells import GRUCell
from rnnlib.layers import GRU, LSTM, RNN, trace_gates

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
D_IN, H, L, N = 3, 4, 5, 2

KINDS = {
    "rnn_tanh": (RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (RNN, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (LSTM, nn.LSTM, {}),
    "gru": (GRU, nn.GRU, {}),
}


def _pair(kind, load_into_ours=True, **kwargs):
    """A torch.nn layer and an rnnlib layer of the same configuration with the same float64 weights."""
    ours_cls, torch_cls, extra = KINDS[kind]
    torch.manual_seed(0)
    ref = torch_cls(D_IN, H, dtype=F64, **extra, **kwargs)
    ours = ours_cls(D_IN, H, dtype=F64, **extra, **kwargs)
    if load_into_ours:
        ours.load_state_dict(ref.state_dict())
    else:
        ref.load_state_dict(ours.state_dict())
    return ours, ref


def _inputs(kind, num_layers, bidirectional, batch_first, batched, with_state):
    gen = torch.Generator().manual_seed(1)
    shape = ((N, L, D_IN) if batch_first else (L, N, D_IN)) if batched else (L, D_IN)
    x = torch.randn(shape, generator=gen, dtype=F64)
    rows = num_layers * (2 if bidirectional else 1)
    state_shape = (rows, N, H) if batched else (rows, H)
    count = 2 if kind == "lstm" else 1
    hx = tuple(torch.randn(state_shape, generator=gen, dtype=F64) for _ in range(count)) if with_state else None
    return x, hx


def _run(module, kind, x, hx):
    """Forward and backward of a random weighted sum of output and final states; returns values and grads."""
    x = x.clone().requires_grad_()
    hx = None if hx is None else tuple(s.clone().requires_grad_() for s in hx)
    arg = None if hx is None else (hx if kind == "lstm" else hx[0])
    output, state = module(x, arg)
    values = (output,) + (state if kind == "lstm" else (state,))
    gen = torch.Generator().manual_seed(2)
    loss = sum((v * torch.randn(v.shape, generator=gen, dtype=F64)).sum() for v in values)
    loss.backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    grads["input"] = x.grad
    for k, s in enumerate(hx or ()):
        grads[f"hx{k}"] = s.grad
    return values, grads


@pytest.mark.parametrize("with_state", [False, True], ids=["no_hx", "hx"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", list(KINDS))
def test_layer_matches_torch(kind, num_layers, bidirectional, batch_first, batched, with_state):
    config = {"num_layers": num_layers, "bidirectional": bidirectional, "batch_first": batch_first}
    ours, ref = _pair(kind, **config)
    x, hx = _inputs(kind, num_layers, bidirectional, batch_first, batched, with_state)
    values, grads = _run(ours, kind, x, hx)
    ref_values, ref_grads = _run(ref, kind, x, hx)
    assert len(values) == len(ref_values)
    for value, ref_value in zip(values, ref_values):
        assert value.shape == ref_value.shape
        torch.testing.assert_close(value, ref_value, **TOL)
    assert grads.keys() == ref_grads.keys()
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], **TOL, msg=f"gradient of {key}")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", list(KINDS))
def test_torch_loads_our_state_dict(kind, num_layers, bidirectional, bias):
    """The other direction: torch.nn loads rnnlib's state dict; outputs, states and gradients match."""
    config = {"num_layers": num_layers, "bidirectional": bidirectional, "bias": bias}
    ours, ref = _pair(kind, load_into_ours=False, **config)
    x, hx = _inputs(kind, num_layers, bidirectional, False, True, True)
    values, grads = _run(ours, kind, x, hx)
    ref_values, ref_grads = _run(ref, kind, x, hx)
    assert values[0].shape == (L, N, (2 if bidirectional else 1) * H)
    for value, ref_value in zip(values, ref_values, strict=True):
        torch.testing.assert_close(value, ref_value, **TOL)
    assert grads.keys() == ref_grads.keys()
    for key in grads:
        torch.testing.assert_close(grads[key], ref_grads[key], **TOL, msg=f"gradient of {key}")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("config", [
    {}, {"num_layers": 3}, {"bidirectional": True}, {"num_layers": 2, "bidirectional": True, "bias": False},
])
def test_state_dict_keys_shapes_and_init_equal_torch(kind, config):
    ours_cls, torch_cls, extra = KINDS[kind]
    torch.manual_seed(5)
    ref = torch_cls(D_IN, H, **extra, **config)
    torch.manual_seed(5)
    ours = ours_cls(D_IN, H, **extra, **config)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)                      # same keys in the same order
    for key in ref_sd:
        assert ours_sd[key].shape == ref_sd[key].shape
        # Same generator, same draws in the same order: PyTorch's initialisation exactly.
        torch.testing.assert_close(ours_sd[key], ref_sd[key], rtol=0, atol=0)
    # torch.nn.RNN's repr leaves out nonlinearity=relu; ours shows it.
    assert repr(ours).split("(", 1)[1].replace(", nonlinearity=relu", "") == repr(ref).split("(", 1)[1]


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_init_is_uniform_over_plus_minus_one_over_sqrt_hidden(cls):
    torch.manual_seed(0)
    layer = cls(30, 64, num_layers=2)
    bound = 1 / math.sqrt(64)
    values = torch.cat([p.detach().flatten() for p in layer.parameters()])
    assert values.min() >= -bound and values.max() <= bound
    assert values.max() > 0.99 * bound and values.min() < -0.99 * bound
    assert abs(values.mean()) < 0.01 * bound
    assert abs(values.std() - bound / math.sqrt(3)) < 0.02 * bound     # the std of U(-b, b)


def test_forget_bias_on_every_layer_and_direction():
    lstm = LSTM(D_IN, H, num_layers=2, bidirectional=True, forget_bias=1.0)
    bias_names = [name for name, _ in lstm.named_parameters() if name.startswith("bias")]
    assert len(bias_names) == 8
    for name, p in lstm.named_parameters():
        if name.startswith("bias_ih"):
            assert torch.equal(p[H:2 * H], torch.ones(H))
        if name.startswith("bias_hh"):
            assert torch.equal(p[H:2 * H], torch.zeros(H))
        if name.startswith("bias"):
            assert p[:H].abs().max() <= 1 / math.sqrt(H) and p[2 * H:].abs().max() <= 1 / math.sqrt(H)
    with pytest.raises(ValueError, match="bias=True"):
        LSTM(D_IN, H, bias=False, forget_bias=1.0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_dropout_only_in_training_and_only_between_layers(kind):
    # dropout=1 zeroes everything it touches, so train mode becomes deterministic and comparable to torch:
    # this checks that dropout sits between layers (not after the last) exactly where torch puts it.
    ours, ref = _pair(kind, num_layers=3, dropout=1.0, bidirectional=True)
    x = torch.randn(L, N, D_IN, dtype=F64)
    ours.train(), ref.train()
    out_train, state_train = ours(x)
    torch.testing.assert_close(out_train, ref(x)[0], **TOL)
    ours.eval(), ref.eval()
    out_eval, state_eval = ours(x)
    torch.testing.assert_close(out_eval, ref(x)[0], **TOL)
    assert (out_train - out_eval).abs().max() > 1e-3
    h_train, h_eval = (state_train[0], state_eval[0]) if kind == "lstm" else (state_train, state_eval)
    torch.testing.assert_close(h_train[:2], h_eval[:2], **TOL)  # layer 0 (both directions) sees no dropout


@pytest.mark.parametrize("kind", list(KINDS))
def test_dropout_is_random_in_training_and_identity_in_eval(kind):
    ours, _ = _pair(kind, num_layers=2, dropout=0.5)
    plain, _ = _pair(kind, num_layers=2)
    x = torch.randn(L, N, D_IN, dtype=F64)
    ours.eval()
    torch.testing.assert_close(ours(x)[0], plain(x)[0], **TOL)
    ours.train()
    torch.manual_seed(0)
    first = ours(x)[0]
    assert (first - plain(x)[0]).abs().max() > 1e-3
    assert (first - ours(x)[0]).abs().max() > 1e-3             # a fresh mask on every call


def test_dropout_arguments_are_checked_like_torch():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LSTM(D_IN, H, num_layers=2, dropout=1.5)
    with pytest.warns(UserWarning, match="num_layers=1"):
        GRU(D_IN, H, dropout=0.2)


def test_gru_paper_variant_equals_a_loop_of_paper_cells_and_differs_from_torch():
    torch.manual_seed(0)
    layer = GRU(D_IN, H, reset_after=False, dtype=F64)
    cell = GRUCell(D_IN, H, reset_after=False, dtype=F64)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    x = torch.randn(L, N, D_IN, dtype=F64)
    h = torch.zeros(N, H, dtype=F64)
    expected = []
    for x_t in x:
        h = cell(x_t, h)
        expected.append(h)
    output, h_n = layer(x)
    torch.testing.assert_close(output, torch.stack(expected), **TOL)
    torch.testing.assert_close(h_n[0], h, **TOL)
    ref = nn.GRU(D_IN, H, dtype=F64)
    ref.load_state_dict(layer.state_dict())
    assert (ref(x)[0] - output).abs().max() > 1e-3


# --- trace_gates ---------------------------------------------------------------------------------

@pytest.mark.parametrize("library", ["rnnlib", "torch"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_trace_gates_h_equals_module_output(library, kind, batch_first, with_state):
    ours, ref = _pair(kind, num_layers=2, batch_first=batch_first)
    module = ours if library == "rnnlib" else ref
    x, hx = _inputs(kind, 2, False, batch_first, True, with_state)
    arg = None if hx is None else (hx if kind == "lstm" else hx[0])
    output, state = module(x, arg)
    expected_h = output.transpose(0, 1) if batch_first else output
    trace = trace_gates(module, x, arg, layer=1)
    names = ("i", "f", "g", "o", "c", "h") if kind == "lstm" else ("r", "z", "n", "h")
    assert tuple(trace) == names
    for value in trace.values():
        assert value.shape == (L, N, H) and not value.requires_grad
    torch.testing.assert_close(trace["h"], expected_h.detach(), **TOL)
    if kind == "lstm":
        torch.testing.assert_close(trace["c"][-1], state[1][1].detach(), **TOL)
    layer0 = trace_gates(module, x, arg, layer=0)
    torch.testing.assert_close(layer0["h"][-1], (state[0] if kind == "lstm" else state)[0].detach(), **TOL)


def test_trace_gates_values_follow_the_equations():
    torch.manual_seed(0)
    lstm = nn.LSTM(D_IN, H, dtype=F64)
    x = torch.randn(L, N, D_IN, dtype=F64)
    trace = trace_gates(lstm, x)
    with torch.no_grad():   # first step from zero state: pre-activations are x_0 W_ih^T + b_ih + b_hh
        a_i, a_f, a_g, a_o = (x[0] @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + lstm.bias_hh_l0).chunk(4, dim=1)
    torch.testing.assert_close(trace["i"][0], torch.sigmoid(a_i), **TOL)
    torch.testing.assert_close(trace["f"][0], torch.sigmoid(a_f), **TOL)
    torch.testing.assert_close(trace["g"][0], torch.tanh(a_g), **TOL)
    torch.testing.assert_close(trace["o"][0], torch.sigmoid(a_o), **TOL)


def test_trace_gates_unbatched_and_paper_gru():
    gru = GRU(D_IN, H, reset_after=False, dtype=F64)
    x = torch.randn(L, D_IN, dtype=F64)
    trace = trace_gates(gru, x)
    assert trace["z"].shape == (L, H)
    torch.testing.assert_close(trace["h"], gru(x)[0].detach(), **TOL)


def test_trace_gates_refuses_what_it_cannot_trace():
    with pytest.raises(ValueError, match="bidirectional"):
        trace_gates(nn.LSTM(D_IN, H, bidirectional=True), torch.randn(L, N, D_IN))
    with pytest.raises(TypeError, match="LSTM and GRU"):
        trace_gates(RNN(D_IN, H), torch.randn(L, N, D_IN))
    with pytest.raises(ValueError, match="layer"):
        trace_gates(GRU(D_IN, H), torch.randn(L, N, D_IN), layer=1)
    with pytest.raises(ValueError, match=f"{D_IN} features"):
        trace_gates(GRU(D_IN, H), torch.randn(L, N, D_IN + 1))
    with pytest.raises(ValueError, match=rf"h_0 of shape \(1, {N}, {H}\).*got \(1, {N + 1}, {H}\)"):
        trace_gates(GRU(D_IN, H), torch.randn(L, N, D_IN), torch.zeros(1, N + 1, H))


# --- errors a learner can act on -----------------------------------------------------------------

@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_input_errors_name_expected_and_given(cls):
    name = cls.__name__
    layer = cls(10, 20, num_layers=2)
    with pytest.raises(ValueError, match=rf"{name} expected input with 10 features \(input_size\), "
                                         r"got input of shape \(32, 5, 7\)"):
        layer(torch.randn(32, 5, 7))
    with pytest.raises(ValueError, match=r"\(seq_len, batch, input_size\).*\(4, 3, 2, 10\)"):
        layer(torch.randn(4, 3, 2, 10))
    with pytest.raises(ValueError, match=r"\(batch, seq_len, input_size\)"):
        cls(10, 20, batch_first=True)(torch.randn(10))
    with pytest.raises(ValueError, match="sequence length"):
        layer(torch.randn(0, 3, 10))
    with pytest.raises(ValueError, match="token ids"):
        layer(torch.randint(5, (4, 3, 10)))
    with pytest.raises(ValueError, match="float64"):
        layer(torch.randn(4, 3, 10, dtype=F64))


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_state_errors_name_expected_and_given(cls):
    layer = cls(10, 20, num_layers=2, batch_first=True)
    x = torch.randn(3, 4, 10)                         # batch 3, seq_len 4

    def state(*shape):
        return (torch.zeros(shape), torch.zeros(shape)) if cls is LSTM else torch.zeros(shape)

    with pytest.raises(ValueError, match=r"batch size of h_0 \(5\) differs from the input's \(3\)"):
        layer(x, state(2, 5, 20))
    with pytest.raises(ValueError, match=r"h_0 of shape \(2, 3, 20\).*got \(1, 3, 20\)"):
        layer(x, state(1, 3, 20))
    with pytest.raises(ValueError, match=r"h_0 of shape \(2, 3, 20\).*got \(2, 3, 21\)"):
        layer(x, state(2, 3, 21))
    with pytest.raises(ValueError, match=r"h_0 of shape \(2, 20\).*unbatched.*got \(2, 1, 20\)"):
        layer(torch.randn(4, 10), state(2, 1, 20))
    if cls is LSTM:
        with pytest.raises(ValueError, match=r"c_0 of shape \(2, 3, 20\).*got \(2, 3, 19\)"):
            layer(x, (torch.zeros(2, 3, 20), torch.zeros(2, 3, 19)))
        with pytest.raises(TypeError, match=r"\(h_0, c_0\)"):
            layer(x, torch.zeros(2, 3, 20))


def test_unsupported_features_raise_clearly():
    with pytest.raises(NotImplementedError, match="proj_size"):
        LSTM(D_IN, H, proj_size=2)
    x = torch.randn(L, N, D_IN)
    packed = pack_padded_sequence(x, torch.tensor([L, L - 1]))
    with pytest.raises(TypeError, match="PackedSequence"):
        GRU(D_IN, H)(packed)
    with pytest.raises(ValueError, match="hidden_size"):
        RNN(D_IN, 0)
    with pytest.raises(ValueError, match="num_layers"):
        LSTM(D_IN, H, num_layers=0)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(D_IN, H, nonlinearity="sigmoid")
