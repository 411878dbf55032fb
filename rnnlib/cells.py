r"""Recurrent cells written with plain tensor operations: one time step of an RNN, an LSTM and a GRU.

Each equation lives in exactly one function. ``*_step`` functions take the input projection
:math:`x W_{ih}^\top + b_{ih}` already computed (the layers in :mod:`rnnlib.layers` compute it for the
whole sequence in one matrix product); ``*_cell_step`` functions take the raw input and call them.
The ``nn.Module`` cells hold the parameters under PyTorch's names and shapes, so
``cell.load_state_dict(torch.nn.LSTMCell(...).state_dict())`` works and the outputs match.

Equations (PyTorch's notation, row vectors, :math:`\sigma` the logistic sigmoid, :math:`\odot` the
elementwise product):

* Elman RNN:  :math:`h' = \phi(x W_{ih}^\top + b_{ih} + h W_{hh}^\top + b_{hh})`, :math:`\phi` = tanh or ReLU.
* LSTM (gate order i, f, g, o in the fused weights, as in ``torch.nn.LSTM``)::

      i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
      f  = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
      g  = tanh   (W_ig x + b_ig + W_hg h + b_hg)      candidate cell
      o  = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
      c' = f * c + i * g
      h' = o * tanh(c')

* GRU (gate order r, z, n, as in ``torch.nn.GRU``)::

      r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)      reset gate
      z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)      update gate
      n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))   candidate  (reset_after=True, PyTorch / cuDNN)
      n  = tanh(W_in x + b_in + W_hn (r * h) + b_hn)   candidate  (reset_after=False, Cho et al. 2014)
      h' = (1 - z) * n + z * h

  The two GRU variants use the same parameters, so one set of weights runs both. They differ in where
  the reset gate acts: PyTorch (and cuDNN, and Keras' default ``reset_after=True``) resets the *result*
  of the hidden matrix product, which lets the product :math:`W_{hh} h` for all three gates be one
  matrix multiplication per step; the original paper resets the hidden state *before* multiplying,
  which needs a second, sequential product. They are different functions of the same weights:
  weights trained with one variant give different outputs with the other.

Initialisation follows PyTorch: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)). ``LSTMCell`` can
optionally start the forget gate open (``forget_bias``, Gers et al. 2000; Jozefowicz et al. 2015).

Shape errors raise ``ValueError`` with the expected and the given shape (PyTorch raises
``RuntimeError`` for some of them).

References: Elman, "Finding structure in time" (1990); Hochreiter & Schmidhuber, "Long short-term
memory" (1997); Gers, Schmidhuber & Cummins, "Learning to forget" (2000); Cho et al., "Learning phrase
representations using RNN encoder-decoder for statistical machine translation" (2014);
Jozefowicz, Zaremba & Sutskever, "An empirical exploration of recurrent network architectures" (2015).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "RNNCell", "LSTMCell", "GRUCell",
    "rnn_step", "lstm_step", "gru_step", "LSTMStep", "GRUStep",
    "rnn_cell_step", "lstm_cell_step", "gru_cell_step",
]

_NONLINEARITIES = ("tanh", "relu")


class LSTMStep(NamedTuple):
    """Everything one LSTM step computes; each tensor has shape (batch, hidden_size) or (hidden_size,)."""

    i: Tensor
    f: Tensor
    g: Tensor
    o: Tensor
    c: Tensor
    h: Tensor


class GRUStep(NamedTuple):
    """Everything one GRU step computes; each tensor has shape (batch, hidden_size) or (hidden_size,)."""

    r: Tensor
    z: Tensor
    n: Tensor
    h: Tensor


# ---------------------------------------------------------------------------------------------
# One time step, given the input projection x W_ih^T + b_ih (the layers precompute it for all steps)
# ---------------------------------------------------------------------------------------------

def _hidden_projection(x_proj: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Optional[Tensor]) -> Tensor:
    """x_proj + h W_hh^T (+ b_hh), as one fused ``addmm`` when the shapes allow it."""
    if bias_hh is not None:
        x_proj = x_proj + bias_hh
    if h.dim() == 2 and x_proj.dim() == 2:
        return torch.addmm(x_proj, h, weight_hh.t())
    return x_proj + h @ weight_hh.t()


def rnn_step(x_proj: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Optional[Tensor] = None,
             nonlinearity: str = "tanh") -> Tensor:
    r"""One Elman RNN step from the input projection ``x_proj`` = x W_ih^T + b_ih.

    .. math:: h' = \phi(x_{proj} + h W_{hh}^\top + b_{hh})

    Shapes: ``x_proj`` and ``h`` (batch, H) or (H,); returns h' of the same shape.
    """
    a = _hidden_projection(x_proj, h, weight_hh, bias_hh)
    if nonlinearity == "tanh":
        return torch.tanh(a)
    if nonlinearity == "relu":
        return torch.relu(a)
    raise ValueError(f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.")


def lstm_step(x_proj: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor,
              bias_hh: Optional[Tensor] = None) -> LSTMStep:
    r"""One LSTM step from the input projection ``x_proj`` = x W_ih^T + b_ih (4H features, order i, f, g, o).

    .. math::
        i = \sigma(\cdot),\; f = \sigma(\cdot),\; g = \tanh(\cdot),\; o = \sigma(\cdot)
        \quad\text{from}\quad x_{proj} + h W_{hh}^\top + b_{hh} \\
        c' = f \odot c + i \odot g, \qquad h' = o \odot \tanh(c')

    Shapes: ``x_proj`` (batch, 4H) or (4H,); ``h``, ``c`` (batch, H) or (H,).
    Returns an :class:`LSTMStep` ``(i, f, g, o, c, h)`` holding the new ``c`` and ``h``.
    """
    gates = _hidden_projection(x_proj, h, weight_hh, bias_hh)   # (B, 4H): one matmul for all gates
    i, f, g, o = gates.chunk(4, dim=-1)                          # (B, H) each
    i = torch.sigmoid(i)
    f = torch.sigmoid(f)
    g = torch.tanh(g)
    o = torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return LSTMStep(i, f, g, o, c, h)


def gru_step(x_proj: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Optional[Tensor] = None,
             reset_after: bool = True) -> GRUStep:
    r"""One GRU step from the input projection ``x_proj`` = x W_ih^T + b_ih (3H features, order r, z, n).

    .. math::
        r = \sigma(x_r + h W_{hr}^\top + b_{hr}), \quad z = \sigma(x_z + h W_{hz}^\top + b_{hz}) \\
        n = \tanh(x_n + r \odot (h W_{hn}^\top + b_{hn}))  \quad\text{(reset\_after=True, PyTorch)} \\
        n = \tanh(x_n + (r \odot h) W_{hn}^\top + b_{hn})  \quad\text{(reset\_after=False, Cho et al. 2014)} \\
        h' = (1 - z) \odot n + z \odot h

    Shapes: ``x_proj`` (batch, 3H) or (3H,); ``h`` (batch, H) or (H,).
    Returns a :class:`GRUStep` ``(r, z, n, h)`` holding the new ``h``.
    """
    x_r, x_z, x_n = x_proj.chunk(3, dim=-1)
    if reset_after:
        h_proj = F.linear(h, weight_hh, bias_hh)                 # (B, 3H): one matmul for all gates
        h_r, h_z, h_n = h_proj.chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
    else:
        # The reset gate must be known before W_hn can be applied, so the hidden product splits in two.
        hidden = weight_hh.size(0) // 3
        b_rz = None if bias_hh is None else bias_hh[: 2 * hidden]
        b_n = None if bias_hh is None else bias_hh[2 * hidden:]
        h_r, h_z = F.linear(h, weight_hh[: 2 * hidden], b_rz).chunk(2, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + F.linear(r * h, weight_hh[2 * hidden:], b_n))
    h = (1 - z) * n + z * h
    return GRUStep(r, z, n, h)


# ---------------------------------------------------------------------------------------------
# One time step from the raw input x (what the cells compute)
# ---------------------------------------------------------------------------------------------

def rnn_cell_step(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                  bias_ih: Optional[Tensor] = None, bias_hh: Optional[Tensor] = None,
                  nonlinearity: str = "tanh") -> Tensor:
    """h' = phi(x W_ih^T + b_ih + h W_hh^T + b_hh); x (batch, D) or (D,), h (batch, H) or (H,)."""
    return rnn_step(F.linear(x, weight_ih, bias_ih), h, weight_hh, bias_hh, nonlinearity)


def lstm_cell_step(x: Tensor, h: Tensor, c: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                   bias_ih: Optional[Tensor] = None, bias_hh: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """One LSTM step from the raw input; returns (h', c').

    i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh) through sigmoid, sigmoid, tanh, sigmoid;
    c' = f * c + i * g;  h' = o * tanh(c').  Shapes: x (batch, D), h and c (batch, H), or unbatched.
    """
    step = lstm_step(F.linear(x, weight_ih, bias_ih), h, c, weight_hh, bias_hh)
    return step.h, step.c


def gru_cell_step(x: Tensor, h: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                  bias_ih: Optional[Tensor] = None, bias_hh: Optional[Tensor] = None,
                  reset_after: bool = True) -> Tensor:
    """One GRU step from the raw input; returns ``h'``. Shapes: x (batch, D), h (batch, H), or unbatched.

    ``r, z = sigmoid(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z})``;
    ``n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))`` with ``reset_after=True`` (PyTorch), or
    ``n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn)`` with ``reset_after=False`` (Cho et al. 2014);
    ``h' = (1 - z) * n + z * h``.
    """
    return gru_step(F.linear(x, weight_ih, bias_ih), h, weight_hh, bias_hh, reset_after).h


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------

def _check_sizes(input_size: int, hidden_size: int) -> None:
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class _CellBase(nn.Module):
    """Parameters, initialisation and input checks shared by the three cells."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_gates: int,
                 device=None, dtype=None) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty(num_gates * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(num_gates * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(num_gates * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(num_gates * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as in PyTorch."""
        uniform_init_(self, self.hidden_size)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            text += ", bias=False"
        return text

    def _check_input(self, input: Tensor, states: dict[str, Optional[Tensor]]) -> bool:
        """Validate shapes; return True when the input is batched (2-D)."""
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{name} expected input of shape (batch, {self.input_size}) or ({self.input_size},), "
                f"got {tuple(input.shape)}"
            )
        if input.size(-1) != self.input_size:
            raise ValueError(
                f"{name} expected input with {self.input_size} features (input_size), "
                f"got input of shape {tuple(input.shape)}"
            )
        if input.dtype != self.weight_ih.dtype:
            raise ValueError(
                f"{name} has {self.weight_ih.dtype} parameters but got input of dtype {input.dtype}; "
                f"convert with input.to({self.weight_ih.dtype})"
            )
        batched = input.dim() == 2
        expected = (input.size(0), self.hidden_size) if batched else (self.hidden_size,)
        for state_name, state in states.items():
            if state is not None and tuple(state.shape) != expected:
                layout = "(batch, hidden_size)" if batched else "(hidden_size,) for unbatched input"
                raise ValueError(
                    f"{name} expected {state_name} of shape {expected} {layout}, got {tuple(state.shape)}"
                )
        return batched

    def _zeros(self, input: Tensor) -> Tensor:
        return input.new_zeros(input.shape[:-1] + (self.hidden_size,))


class RNNCell(_CellBase):
    """Elman RNN cell: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or ReLU).

    Shapes: input (batch, input_size) or (input_size,); hx (batch, hidden_size) or (hidden_size,),
    zeros when omitted. Returns h' (batch, hidden_size) or (hidden_size,).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device=None, dtype=None) -> None:
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.")
        super().__init__(input_size, hidden_size, bias, num_gates=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity
        self.reset_parameters()

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        self._check_input(input, {"hx": hx})
        h = self._zeros(input) if hx is None else hx
        return rnn_cell_step(input, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                             self.nonlinearity)


class LSTMCell(_CellBase):
    """LSTM cell (gate order i, f, g, o, as in ``torch.nn.LSTMCell``).

    Shapes: input (batch, input_size) or (input_size,); hx = (h, c), each (batch, hidden_size) or
    (hidden_size,), zeros when omitted. Returns (h', c') of the same shape.

    ``forget_bias``: when set, ``reset_parameters`` puts the forget-gate slice of ``bias_ih`` to
    ``forget_bias`` and that of ``bias_hh`` to 0, so the forget gate starts at sigmoid(forget_bias)
    (1.0 gives about 0.73: the cell remembers by default). ``None`` keeps PyTorch's initialisation.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None, forget_bias: Optional[float] = None) -> None:
        if forget_bias is not None and not bias:
            raise ValueError("forget_bias needs bias=True: there is no bias to set with bias=False")
        super().__init__(input_size, hidden_size, bias, num_gates=4, device=device, dtype=dtype)
        self.forget_bias = forget_bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's U(-1/sqrt(H), 1/sqrt(H)), then the forget-gate bias if ``forget_bias`` is set."""
        super().reset_parameters()
        if self.forget_bias is not None:
            _set_forget_bias(self.bias_ih, self.bias_hh, self.hidden_size, self.forget_bias)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (f", forget_bias={self.forget_bias}" if self.forget_bias is not None else "")

    def forward(self, input: Tensor, hx: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor]:
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("LSTMCell expects hx as a tuple (h, c) of two tensors, or None")
        h, c = (None, None) if hx is None else hx
        self._check_input(input, {"h": h, "c": c})
        if hx is None:
            h = c = self._zeros(input)
        return lstm_cell_step(input, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(_CellBase):
    """GRU cell (gate order r, z, n, as in ``torch.nn.GRUCell``).

    ``reset_after=True`` (default) computes exactly what ``torch.nn.GRUCell`` computes;
    ``reset_after=False`` applies the reset gate before the hidden matrix product, as in
    Cho et al. (2014). See the module docstring for both equations.

    Shapes: input (batch, input_size) or (input_size,); hx (batch, hidden_size) or (hidden_size,),
    zeros when omitted. Returns h' of the same shape as hx.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None, reset_after: bool = True) -> None:
        super().__init__(input_size, hidden_size, bias, num_gates=3, device=device, dtype=dtype)
        self.reset_after = reset_after
        self.reset_parameters()

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:
        self._check_input(input, {"hx": hx})
        h = self._zeros(input) if hx is None else hx
        return gru_cell_step(input, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                             self.reset_after)


def uniform_init_(module: nn.Module, hidden_size: int) -> None:
    """Draw every parameter of ``module`` from U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), in the order of
    ``module.parameters()``: PyTorch's initialisation of its recurrent cells and layers (rnnlib's cells,
    layers and minGRU/minLSTM all use it)."""
    bound = 1.0 / math.sqrt(hidden_size)
    for weight in module.parameters():
        nn.init.uniform_(weight, -bound, bound)


def _set_forget_bias(bias_ih: Tensor, bias_hh: Tensor, hidden_size: int, value: float) -> None:
    """Make b_if + b_hf = value: the forget slice (rows H:2H in the order i, f, g, o)."""
    with torch.no_grad():
        bias_ih[hidden_size: 2 * hidden_size].fill_(value)
        bias_hh[hidden_size: 2 * hidden_size].zero_()
