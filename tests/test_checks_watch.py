"""The recorder behind the checkers (rnnlib.checks._watch): every route to a fused operator, a torch.nn
recurrent or attention module, rnnlib's own code or a reference solution is seen, however it is reached;
calls of a given object are counted; calls that cut the autograd graph are named with the learner's line."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import rnnlib
from rnnlib.checks._watch import watching
from rnnlib.solutions import exercise_7_2 as s72
from rnnlib.solutions import exercise_7_5 as s75

B, D, H, T = 2, 3, 4, 5


@pytest.fixture
def data():
    torch.manual_seed(0)
    lstm_cell, gru_cell, rnn = nn.LSTMCell(D, H), nn.GRUCell(D, H), nn.RNN(D, H, batch_first=True)
    return dict(x=torch.randn(B, D, requires_grad=True), h=torch.randn(B, H), c=torch.randn(B, H),
                seq=torch.randn(B, T, D), lstm_cell=lstm_cell, gru_cell=gru_cell, rnn=rnn,
                w=[lstm_cell.weight_ih, lstm_cell.weight_hh, lstm_cell.bias_ih, lstm_cell.bias_hh],
                gw=[gru_cell.weight_ih, gru_cell.weight_hh, gru_cell.bias_ih, gru_cell.bias_hh],
                q=torch.randn(B, 3, H), k=torch.randn(B, T, H))


def record(fn, **kw):
    with watching(**kw) as watch:
        fn()
    return watch


class Hidden(nn.Module):
    """A bidirectional nn.GRU inside the learner's own module."""

    def __init__(self):
        super().__init__()
        self.inner = nn.GRU(D, H, batch_first=True, bidirectional=True)

    def forward(self, x):
        return self.inner(x)


def _disabled(fn):
    def run():
        with torch._C.DisableTorchFunction():
            return fn()
    return run


ROUTES = {  # name -> (call with the fixture's data, an operator or module that must be recorded)
    "nn.LSTMCell": (lambda d: d["lstm_cell"](d["x"], (d["h"], d["c"])), "LSTMCell"),
    "torch.lstm_cell": (lambda d: torch.lstm_cell(d["x"], (d["h"], d["c"]), *d["w"]), "lstm_cell"),
    "torch._VF.lstm_cell": (lambda d: torch._VF.lstm_cell(d["x"], (d["h"], d["c"]), *d["w"]), "lstm_cell"),
    "torch.ops.aten.lstm_cell": (lambda d: torch.ops.aten.lstm_cell(d["x"], [d["h"], d["c"]], *d["w"]), "lstm_cell"),
    "lstm_cell with torch functions disabled": (
        lambda d: _disabled(lambda: torch.lstm_cell(d["x"], (d["h"], d["c"]), *d["w"]))(), "lstm_cell"),
    "a saved reference to torch.lstm_cell": (lambda d: (lambda f: f(d["x"], (d["h"], d["c"]), *d["w"]))(
        torch._C._VariableFunctions.lstm_cell), "lstm_cell"),
    "functional_call(nn.LSTMCell)": (lambda d: functional_call(d["lstm_cell"], dict(d["lstm_cell"].named_parameters()),
                                                               (d["x"], (d["h"], d["c"]))), "LSTMCell"),
    "nn.LSTMCell given other weights": (lambda d: nn.LSTMCell(D, H)(d["x"]), "LSTMCell"),
    "nn.GRUCell": (lambda d: d["gru_cell"](d["x"], d["h"]), "GRUCell"),
    "torch.gru_cell": (lambda d: torch.gru_cell(d["x"], d["h"], *d["gw"]), "gru_cell"),
    "nn.RNNCell": (lambda d: nn.RNNCell(D, H)(d["x"]), "RNNCell"),
    "torch.rnn_tanh": (lambda d: torch.rnn_tanh(d["seq"], torch.zeros(1, B, H), list(d["rnn"]._flat_weights), True, 1,
                                                0.0, False, False, True), "rnn_tanh"),
    "torch.ops.aten.rnn_tanh with torch functions disabled": (lambda d: _disabled(lambda: torch.ops.aten.rnn_tanh.input(
        d["seq"], torch.zeros(1, B, H), list(d["rnn"]._flat_weights), True, 1, 0.0, False, False, True))(), "rnn_tanh"),
    "nn.RNN": (lambda d: d["rnn"](d["seq"]), "RNN"),
    "nn.LSTM": (lambda d: nn.LSTM(D, H, batch_first=True)(d["seq"]), "LSTM"),
    "torch.lstm": (lambda d: torch.lstm(d["seq"], (torch.zeros(1, B, H), torch.zeros(1, B, H)),
                                        list(nn.LSTM(D, H)._flat_weights), True, 1, 0.0, False, False, True), "lstm"),
    "nn.GRU(bidirectional=True) in a helper module": (lambda d: Hidden()(d["seq"]), "GRU"),
    "F.scaled_dot_product_attention": (lambda d: F.scaled_dot_product_attention(d["q"], d["k"], d["k"]),
                                       "scaled_dot_product_attention"),
    "scaled_dot_product_attention with torch functions disabled": (
        lambda d: _disabled(lambda: F.scaled_dot_product_attention(d["q"], d["k"], d["k"]))(), "_safe_softmax"),
    "nn.MultiheadAttention": (lambda d: nn.MultiheadAttention(H, 1, batch_first=True)(d["q"], d["k"], d["k"]),
                              "MultiheadAttention"),
    "torch.ao's quantizable LSTMCell (plain Python inside torch)": (
        lambda d: __import__("torch.ao.nn.quantizable", fromlist=["LSTMCell"]).LSTMCell(D, H)(d["x"], (d["h"], d["c"])),
        "LSTMCell"),
    "torch.ao's dynamically quantized GRU": (
        lambda d: __import__("torch.ao.nn.quantized.dynamic", fromlist=["GRU"]).GRU(D, H, batch_first=True)(d["seq"]),
        "GRU"),
    "torch.lstm_cell inside a TorchScript function": (lambda d: _scripted_cell()(d["x"], d["h"], d["c"], *d["w"]),
                                                      "unsafe_split"),
    "torch.lstm_cell in a worker thread": (lambda d: _in_thread(torch.lstm_cell, d["x"], (d["h"], d["c"]), *d["w"]),
                                           "lstm_cell"),
    "nn.GRU in a threading.Thread": (lambda d: _in_thread(nn.GRU(D, H, batch_first=True), d["seq"], pool=False), "GRU"),
}


def _in_thread(fn, *args, pool=True):
    """Run ``fn`` in a thread started inside the check (a pool's worker, or a plain threading.Thread)."""
    if pool:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            return executor.submit(fn, *args).result()
    import threading

    out = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))
    thread.start()
    thread.join()
    return out[0]


def _scripted_cell():
    def cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
        return torch.lstm_cell(x, [h, c], w_ih, w_hh, b_ih, b_hh)

    return torch.jit.script(cell)


@pytest.mark.filterwarnings("ignore:.*quantiz:UserWarning", "ignore:.*torch.jit.script:DeprecationWarning")
@pytest.mark.parametrize("route", list(ROUTES))
def test_every_route_to_a_fused_operator_or_module_is_recorded(route, data):
    fn, expected = ROUTES[route]
    watch = record(lambda: fn(data))
    seen = set(watch.fused) | set(watch.modules)
    assert expected in seen, (route, seen)
    assert watch.families(), route


def test_the_learners_line_is_named(data):
    def my_cell(x, state):
        return torch.lstm_cell(x, state, *data["w"])

    watch = record(lambda: my_cell(data["x"], (data["h"], data["c"])))
    assert "in test_the_learners_line_is_named.<locals>.my_cell, line" in watch.fused["lstm_cell"]


def test_plain_pytorch_code_records_nothing(data):
    def by_hand(x, state):
        h, c = state
        gates = x @ data["w"][0].T + data["w"][2] + h @ data["w"][1].T + data["w"][3]
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), torch.softmax(torch.einsum("bd,bd->b", x, x), -1)

    watch = record(lambda: by_hand(data["x"], (data["h"], data["c"])))
    assert not watch.families() and not watch.reference and not watch.cuts


def test_rnnlib_and_the_solutions_are_recorded_by_name(data):
    x, h, c, w = data["x"], data["h"], data["c"], data["w"]
    assert record(lambda: rnnlib.cells.lstm_cell_step(x, h, c, *w)).reference == ["rnnlib.cells.lstm_cell_step"]
    assert "rnnlib.solutions.exercise_7_2.LSTMCell.forward" in record(lambda: s72.LSTMCell(D, H)(x)).reference
    assert record(lambda: rnnlib.attention.masked_softmax(data["q"], data["q"] > 0)).reference == [
        "rnnlib.attention.masked_softmax"]
    # a copy of the function object keeps rnnlib's code, so it is still rnnlib's
    copy = types.FunctionType(s75.dot_scores.__code__, {"math": __import__("math")}, "dot_scores")
    assert record(lambda: copy(data["q"], data["k"])).reference == ["rnnlib.solutions.exercise_7_5.dot_scores"]
    # an rnnlib module, and what its forward runs, is recorded once, by its outermost function
    watch = record(lambda: rnnlib.layers.LSTM(D, H, batch_first=True)(data["seq"]))
    assert watch.reference[-1] == "rnnlib.layers.LSTM.forward" and not watch.families()


def test_allowed_modules_are_not_looked_into_and_calls_are_counted(data):
    cell = rnnlib.LSTMCell(D, H)

    def loop(cell, x):
        state = None
        for t in range(x.size(1)):
            state = cell.forward(x[:, t], state) if t % 2 else cell(x[:, t], state)
        return state

    watch = record(lambda: loop(cell, data["seq"]), allow=[cell], count=[cell])
    assert watch.count(cell) == T and not watch.reference and not watch.families()
    given = nn.GRU(D, H, batch_first=True)
    watch = record(lambda: (given(data["seq"]), given(data["seq"].flip(1))), allow=[given])
    assert not watch.families()
    watch = record(lambda: (given(data["seq"]), nn.GRU(D, H, batch_first=True)(data["seq"])), allow=[given])
    assert "GRU" in watch.modules


def test_counting_a_function_counts_outermost_calls_only():
    def f(a, depth=0):
        return f(a, depth + 1) if depth < 2 else a + 1

    def g(a):
        return f(f(a))

    watch = record(lambda: g(torch.ones(1)), count=[f])
    assert watch.count(f) == 2


@pytest.mark.parametrize("cut, text", [
    (lambda x: x.detach() * 2, ".detach()"),
    (lambda x: x.data * 2, ".data"),
    (lambda x: torch.from_numpy(x.detach().numpy()), ".numpy()"),
    (lambda x: torch.tensor(x.tolist()), ".tolist()"),
    (lambda x: torch.tensor(x.tolist()), "torch.tensor(...)"),
    (lambda x: x * x.sum().item(), ".item()"),
    (lambda x: (torch.no_grad().__enter__(), x * 2)[1], "torch.no_grad()"),
])
def test_calls_that_cut_the_graph_are_named(cut, text):
    x = torch.randn(3, requires_grad=True)
    try:
        watch = record(lambda: cut(x))
    finally:
        torch.set_grad_enabled(True)
    assert text in [t for t, _ in watch.cuts], watch.cuts


def test_a_scalar_constant_is_not_a_cut():
    x = torch.randn(3, requires_grad=True)
    assert not record(lambda: x * torch.tensor(2.0)).cuts


def test_factories_on_the_learners_lines_are_recorded():
    x = torch.randn(2, 3, dtype=torch.float64)
    watch = record(lambda: torch.zeros(2, 3) + x.new_zeros(2, 3) + torch.zeros(2, 3, dtype=x.dtype, device=x.device))
    assert [(name, dtype) for name, _, dtype, *_ in watch.factories] == [("torch.zeros(...)", torch.float32)]


def test_the_recorder_leaves_nothing_behind():
    import sys

    before = sys.getprofile()
    with pytest.raises(ZeroDivisionError):
        with watching():
            1 / 0
    assert sys.getprofile() is before
    assert not torch._C._is_torch_function_mode_enabled()
