"""rnnlib.minrnn: minGRU and minLSTM against their equations (float64), every scan against the loop, the step
mode against the parallel mode, PyTorch's conventions, the language model, and errors."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlib.minrnn import LOG_SCAN_CHUNK, SCANS, MinGRU, MinLSTM, MinRNNLM, g, log_g
from rnnlib.text import Vocab
from rnnlib.train import count_parameters

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
LAYERS = {"mingru": MinGRU, "minlstm": MinLSTM}
D_IN, H, L, N = 3, 4, 9, 2


def _by_hand(kind, layer, x, h0, k=0):
    """The equations of the module docstring, one step at a time, for layer k: x (T, N, D), h0 (N, H)."""
    W, b = getattr(layer, f"weight_ih_l{k}"), getattr(layer, f"bias_ih_l{k}")
    h, states = h0, []
    for x_t in x:
        if kind == "mingru":
            W_z, W_h = W.chunk(2)
            b_z, b_h = b.chunk(2)
            z = torch.sigmoid(x_t @ W_z.T + b_z)
            h = (1 - z) * h + z * g(x_t @ W_h.T + b_h)
        else:
            W_f, W_i, W_h = W.chunk(3)
            b_f, b_i, b_h = b.chunk(3)
            f, i = torch.sigmoid(x_t @ W_f.T + b_f), torch.sigmoid(x_t @ W_i.T + b_i)
            h = f / (f + i) * h + i / (f + i) * g(x_t @ W_h.T + b_h)
        states.append(h)
    return torch.stack(states)


def _layer(kind, scale=1.0, **kwargs):
    torch.manual_seed(0)
    layer = LAYERS[kind](D_IN, H, dtype=F64, **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(scale)
    return layer


def _grads(layer, x, hx):
    x = x.clone().requires_grad_()
    hx = None if hx is None else hx.clone().requires_grad_()
    out, h_n = layer(x, hx)
    gen = torch.Generator().manual_seed(2)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=F64)).sum() + \
        (h_n * torch.randn(h_n.shape, generator=gen, dtype=F64)).sum()
    params = list(layer.parameters())
    grads = torch.autograd.grad(loss, params + [x] + ([hx] if hx is not None else []))
    return out.detach(), h_n.detach(), grads


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("scale", [1.0, 8.0])   # 8: gates pushed towards 0 and 1
def test_layer_equals_its_equations(kind, scale):
    layer = _layer(kind, scale)
    gen = torch.Generator().manual_seed(1)
    x, h0 = torch.randn(L, N, D_IN, generator=gen, dtype=F64), torch.randn(N, H, generator=gen, dtype=F64)
    out, h_n = layer(x, h0[None])
    want = _by_hand(kind, layer, x, h0)
    torch.testing.assert_close(out, want, **TOL)
    torch.testing.assert_close(h_n[0], want[-1], **TOL)


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("scan", [s for s in SCANS if s != "loop"])
@pytest.mark.parametrize("num_layers,with_state", [(1, False), (1, True), (2, True)])
def test_every_scan_equals_the_loop_in_values_and_gradients(kind, scan, num_layers, with_state):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(L, N, D_IN, generator=gen, dtype=F64) * 3
    hx = torch.randn(num_layers, N, H, generator=gen, dtype=F64) if with_state else None
    loop = _layer(kind, num_layers=num_layers, scan="loop")
    other = _layer(kind, num_layers=num_layers, scan=scan)
    want, got = _grads(loop, x, hx), _grads(other, x, hx)
    for w, o in zip(want[:2], got[:2]):
        torch.testing.assert_close(o, w, **TOL)
    for w, o in zip(want[2], got[2]):
        torch.testing.assert_close(o, w, **TOL)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_long_sequence_with_saturated_gates(kind):
    """T = 3000 (many log-scan chunks), weights scaled so gates sit near 0 and 1: log scan = loop to 1e-10."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3000, 2, D_IN, generator=gen, dtype=F64) * 4
    want = _grads(_layer(kind, 6.0, scan="loop"), x, None)
    got = _grads(_layer(kind, 6.0, scan="log"), x, None)
    assert 3000 > 10 * LOG_SCAN_CHUNK
    for w, o in zip(want[:2], got[:2]):
        torch.testing.assert_close(o, w, **TOL)
    for w, o in zip(want[2], got[2]):
        assert torch.isfinite(o).all()
        torch.testing.assert_close(o, w, **TOL)


@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("num_layers", [1, 2])
def test_step_mode_equals_the_parallel_mode(kind, num_layers):
    layer = _layer(kind, num_layers=num_layers)
    gen = torch.Generator().manual_seed(5)
    x, hx = torch.randn(L, N, D_IN, generator=gen, dtype=F64), torch.randn(num_layers, N, H, generator=gen, dtype=F64)
    out, h_n = layer(x, hx)
    h, steps = hx, []
    for x_t in x:
        y, h = layer.step(x_t, h)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps), out, **TOL)
    torch.testing.assert_close(h, h_n, **TOL)
    # unbatched step, from zeros
    y, h1 = layer.step(x[0, 0])
    torch.testing.assert_close(y, layer(x[:1, :1])[0][0, 0], **TOL)
    assert h1.shape == (num_layers, H)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_carrying_the_state_across_calls_equals_one_call(kind):
    layer = _layer(kind, num_layers=2)
    x = torch.randn(L, N, D_IN, generator=torch.Generator().manual_seed(6), dtype=F64)
    out, h_n = layer(x)
    first, h_mid = layer(x[:4])
    second, h_end = layer(x[4:], h_mid)
    torch.testing.assert_close(torch.cat([first, second]), out, **TOL)
    torch.testing.assert_close(h_end, h_n, **TOL)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_batch_first_and_unbatched_inputs(kind):
    layer = _layer(kind)
    x = torch.randn(L, N, D_IN, generator=torch.Generator().manual_seed(7), dtype=F64)
    out, h_n = layer(x)
    bf = _layer(kind, batch_first=True)
    out_bf, h_bf = bf(x.transpose(0, 1))
    torch.testing.assert_close(out_bf, out.transpose(0, 1), **TOL)
    torch.testing.assert_close(h_bf, h_n, **TOL)
    out_1, h_1 = layer(x[:, 0])                                  # (L, D): unbatched
    assert out_1.shape == (L, H) and h_1.shape == (1, H)
    torch.testing.assert_close(out_1, out[:, 0], **TOL)
    out_1h, _ = layer(x[:, 0], h_1)                              # unbatched with a state (1, H)
    assert out_1h.shape == (L, H)


def test_h0_none_equals_zeros_and_output_shapes():
    layer = _layer("mingru", num_layers=3)
    x = torch.randn(L, N, D_IN, dtype=F64)
    out, h_n = layer(x)
    assert out.shape == (L, N, H) and h_n.shape == (3, N, H)
    torch.testing.assert_close(layer(x, torch.zeros(3, N, H, dtype=F64))[0], out, **TOL)


@pytest.mark.parametrize("kind,chunks", [("mingru", 2), ("minlstm", 3)])
def test_parameters_follow_torch_names_and_count(kind, chunks):
    layer = LAYERS[kind](5, 7, num_layers=2)
    shapes = {name: tuple(p.shape) for name, p in layer.named_parameters()}
    assert shapes == {"weight_ih_l0": (chunks * 7, 5), "bias_ih_l0": (chunks * 7,),
                      "weight_ih_l1": (chunks * 7, 7), "bias_ih_l1": (chunks * 7,)}
    assert count_parameters(layer) == chunks * (5 * 7 + 7) + chunks * (7 * 7 + 7)
    # no weight_hh: a GRU of the same size has 3 (D H + H^2 + 2H) per layer
    assert count_parameters(LAYERS[kind](5, 7)) < count_parameters(nn.GRU(5, 7))
    no_bias = LAYERS[kind](5, 7, bias=False)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight_ih_l0"]
    other = LAYERS[kind](5, 7, num_layers=2)
    other.load_state_dict(layer.state_dict())
    x = torch.randn(3, 2, 5)
    torch.testing.assert_close(other(x)[0], layer(x)[0])


def test_initialisation_is_uniform_in_one_over_root_h():
    layer = MinGRU(10, 100)
    assert layer.weight_ih_l0.abs().max() <= 0.1 and layer.weight_ih_l0.abs().max() > 0.09


def test_dropout_acts_between_layers_in_training_only():
    torch.manual_seed(0)
    layer = MinGRU(3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 3)
    layer.eval()
    a, b = layer(x)[0], layer(x)[0]
    assert torch.equal(a, b)
    layer.train()
    assert not torch.equal(layer(x)[0], layer(x)[0])
    with pytest.warns(UserWarning, match="does nothing"):
        MinGRU(3, 8, dropout=0.5)


def test_g_and_log_g():
    x = torch.linspace(-800, 50, 10_001, dtype=F64)
    assert (g(x) >= 0).all() and torch.isfinite(log_g(x)).all()
    inside = x > -700                                            # where g(x) does not underflow in float64
    torch.testing.assert_close(log_g(x[inside]), torch.log(g(x[inside])), **TOL)
    torch.testing.assert_close(g(torch.tensor([0.0, -1e-12, 1e-12], dtype=F64)), torch.full((3,), 0.5, dtype=F64))
    xs = torch.linspace(-5, 5, 11, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_g(xs).sum(), xs)
    assert torch.isfinite(grad).all() and (grad > 0).all()       # increasing, no NaN from the unused branch


def test_gradcheck_of_the_layer():
    layer = _layer("minlstm", num_layers=2)
    x = torch.randn(6, 2, D_IN, dtype=F64, requires_grad=True)
    hx = torch.randn(2, 2, H, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h: layer(x, h)[0], (x, hx))


@pytest.mark.parametrize("make,match", [
    (lambda: MinGRU(3, 4)(torch.randn(5, 2)), "3 features"),
    (lambda: MinGRU(3, 4)(torch.randn(5)), "shape"),
    (lambda: MinGRU(3, 4)(torch.randn(5, 2, 3, dtype=F64)), "convert"),
    (lambda: MinGRU(3, 4)(torch.zeros(5, 2, 3, dtype=torch.long)), "embed"),
    (lambda: MinGRU(3, 4)(torch.randn(0, 2, 3)), "larger than 0"),
    (lambda: MinGRU(3, 4)(torch.randn(5, 2, 3), torch.zeros(2, 4)), "h_0 of shape"),
    (lambda: MinGRU(3, 4, num_layers=2)(torch.randn(5, 2, 3), torch.zeros(1, 2, 4)), r"\(2, 2, 4\)"),
    (lambda: MinGRU(3, 4, scan="parallel"), "scan must be one of"),
    (lambda: MinGRU(3, 0), "hidden_size"),
    (lambda: MinGRU(3, 4, dropout=2), "dropout"),
    (lambda: MinGRU(3, 4).step(torch.randn(5, 2, 3)), "one time step"),
    (lambda: MinRNNLM(10, 8)(torch.tensor([[1, 2, 30]])), r"\[0, 9\]"),
    (lambda: MinRNNLM(10, 8, cell="gru"), "mingru"),
    (lambda: MinRNNLM(10, 8, num_layers=2)(torch.tensor([[1, 2]]), torch.zeros(1, 1, 8)), "state of shape"),
    (lambda: MinRNNLM(10, 8).step(torch.tensor([[1, 2]])), "one token id"),
])
def test_errors_say_what_to_do(make, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, TypeError), match=match):
            make()


def test_repr_names_the_non_defaults():
    assert repr(MinGRU(3, 4)) == "MinGRU(3, 4)"
    assert "scan='tree'" in repr(MinLSTM(3, 4, scan="tree", batch_first=True))


# ------------------------------------------------------------------------------------------------------
# The language model
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
@pytest.mark.parametrize("mlp_ratio", [0, 2])
def test_lm_step_mode_and_carried_state_equal_one_parallel_call(cell, mlp_ratio):
    torch.manual_seed(0)
    lm = MinRNNLM(11, 8, num_layers=2, cell=cell, mlp_ratio=mlp_ratio).double().eval()
    ids = torch.randint(0, 11, (3, 10))
    logits, state = lm(ids)
    assert logits.shape == (3, 10, 11) and state.shape == (2, 3, 8)
    first, mid = lm(ids[:, :6])
    second, end = lm(ids[:, 6:], mid)
    torch.testing.assert_close(torch.cat([first, second], 1), logits, **TOL)
    torch.testing.assert_close(end, state, **TOL)
    s, steps = None, []
    for t in range(10):
        out, s = lm.step(ids[:, t], s)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), logits, **TOL)
    torch.testing.assert_close(s, state, **TOL)


def test_lm_scan_choice_changes_nothing_but_rounding():
    torch.manual_seed(0)
    lm = MinRNNLM(11, 8, num_layers=2).double()
    ids = torch.randint(0, 11, (2, 40))
    results = {}
    for scan in SCANS:
        lm.scan = scan
        results[scan] = lm(ids)[0]
    assert all(rnn.scan == "loop" for rnn in lm.rnns)
    for scan in SCANS:
        torch.testing.assert_close(results[scan], results["loop"], **TOL)


def test_lm_generates_reproducibly_with_a_constant_size_state():
    vocab = Vocab.from_text("abcdefgh ")
    torch.manual_seed(0)
    lm = MinRNNLM(len(vocab), 8, num_layers=2)
    a = lm.generate(vocab, "abc", 20, generator=0)
    b = lm.generate(vocab, "abc", 20, generator=0)
    assert a == b and a.startswith("abc") and len(a) == 23
    assert lm.training                                          # generate restores the mode
    _, state = lm(vocab.encode("abcabcabc")[None])
    _, longer = lm(vocab.encode("abc" * 50)[None])
    assert state.shape == longer.shape == (2, 1, 8)


def test_lm_trains_with_the_course_helpers():
    from rnnlib.tasks import train_char_lm

    vocab = Vocab.from_text("to be or not to be, that is the question ")
    ids = vocab.encode("to be or not to be, that is the question " * 20)
    torch.manual_seed(0)
    lm = MinRNNLM(len(vocab), 16, num_layers=2)
    history = train_char_lm(lm, ids[:700], ids[700:], steps=60, batch_size=8, seq_len=20, lr=1e-2,
                            eval_every=30, progress=False)
    assert history.val_loss[-1] < 0.6 * history.val_loss[0]


def test_lm_parameter_count():
    lm = MinRNNLM(65, 128, num_layers=3, mlp_ratio=2)
    H = 128
    per_block = 2 * (H * H + H) + 2 * 2 * H + (H * 2 * H + 2 * H) + (2 * H * H + H)
    assert count_parameters(lm) == 65 * H + 3 * per_block + 2 * H + H * 65 + 65
