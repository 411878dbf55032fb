"""Multi-layer, optionally bidirectional RNN, LSTM and GRU layers built on the cell steps of :mod:`rnnlib.cells`.

Same constructor arguments, parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), shapes,
inputs and outputs as ``torch.nn.RNN/LSTM/GRU``, so state dicts load both ways and outputs match.

How a layer runs a sequence x_1 … x_T (shapes with the default ``batch_first=False``):

* the input projections of all steps come from one matrix product before the loop,
  ``X W_ih^T + b_ih`` of shape (T, N, G·H) (G = 1, 4, 3 gates for RNN, LSTM, GRU); only the recurrent
  part h_{t-1} W_hh^T is inside the loop, which runs the step functions of :mod:`rnnlib.cells`;
* stacked layers (Graves et al. 2013): layer k > 0 reads the outputs h_t of layer k-1, with dropout
  between layers in training mode only and never after the last layer, as in PyTorch;
* bidirectional (Schuster & Paliwal 1997): the reverse direction runs the recurrence from t = T down to 1,
  its output for step t is stored at index t, and the next layer reads [h_t^forward; h_t^reverse].

:func:`trace_gates` records the gates of one layer step by step (for heatmaps); it reads only the weights,
so it works for these layers and for ``torch.nn.LSTM/GRU`` alike.

Differences from PyTorch: ``proj_size`` and ``PackedSequence`` inputs are not supported (they raise);
shape errors raise ``ValueError`` with the expected and the given shapes (PyTorch raises ``RuntimeError``
for some); the loop runs in Python, so it is slower than PyTorch's fused kernels (see bench/bench_layers.py).

References: Elman (1990); Hochreiter & Schmidhuber (1997); Cho et al. (2014); Schuster & Paliwal,
"Bidirectional recurrent neural networks" (1997); Graves, Mohamed & Hinton, "Speech recognition with
deep recurrent neural networks" (2013).
"""
from __future__ import annotations

import warnings
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from .cells import _NONLINEARITIES, _check_sizes, _set_forget_bias, gru_step, lstm_step, rnn_step, uniform_init_

__all__ = ["RNN", "LSTM", "GRU", "trace_gates"]

State = tuple[Tensor, ...]   # (h,) for RNN and GRU, (h, c) for LSTM


def check_sequence_input(name: str, input, batch_first: bool, input_size: int, what: str = "input") -> None:
    """Raise a clear error unless ``input`` is a 2-D or 3-D tensor with ``input_size`` features (shared by
    the recurrent layers here and in :mod:`rnnlib.minrnn`)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} expected a tensor as {what}, got {type(input).__name__}")
    if input.dim() not in (2, 3):
        layout = "(batch, seq_len, input_size)" if batch_first else "(seq_len, batch, input_size)"
        raise ValueError(f"{name} expected {what} of shape {layout} or (seq_len, input_size) "
                         f"with input_size={input_size}, got {tuple(input.shape)}")
    if input.size(-1) != input_size:
        raise ValueError(f"{name} expected {what} with {input_size} features (input_size), "
                         f"got {what} of shape {tuple(input.shape)}")


class _RNNBase(nn.Module):
    """Parameters, checks and the layer/direction loop shared by RNN, LSTM and GRU.

    Subclasses set ``num_gates``, ``state_names`` and ``fold_hidden_bias``, and implement ``_scan``.
    """

    num_gates: int = 1
    state_names: tuple[str, ...] = ("h_0",)
    # RNN and LSTM add b_hh to the pre-activation directly, so it can join b_ih in the precomputed
    # projection; the GRU multiplies b_hn by the reset gate, so its b_hh must stay inside the loop.
    fold_hidden_bias: bool = True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, proj_size: int = 0) -> None:
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if proj_size:
            raise NotImplementedError("rnnlib layers do not support proj_size; use torch.nn.LSTM for projections")
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1] (the probability of zeroing an element), "
                             f"got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout acts between stacked layers only, so dropout={dropout} does nothing "
                          f"with num_layers=1", UserWarning, stacklevel=3)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        factory = {"device": device, "dtype": dtype}
        gates_h = self.num_gates * hidden_size
        # Registered layer by layer, forward before reverse, w_ih, w_hh, b_ih, b_hh: torch.nn's order,
        # so that state_dict() keys come out in the same order.
        self._weight_names: list[list[str]] = []
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in ("", "_reverse")[: self.num_directions]:
                names = [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
                shapes = [(gates_h, layer_input_size), (gates_h, hidden_size)]
                if bias:
                    names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"]
                    shapes += [(gates_h,), (gates_h,)]
                for name, shape in zip(names, shapes):
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                self._weight_names.append(names)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """[w_ih, w_hh, (b_ih, b_hh)] for each layer and direction, in order, as in torch.nn."""
        return [[getattr(self, name) for name in names] for names in self._weight_names]

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as in PyTorch."""
        uniform_init_(self, self.hidden_size)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0, "bidirectional": False}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        return text

    # --- checks -------------------------------------------------------------------------------

    def _check_input(self, input: Tensor) -> bool:
        """Validate the input; return True when it is batched (3-D)."""
        name = type(self).__name__
        if isinstance(input, PackedSequence):
            raise TypeError(f"rnnlib's {name} does not accept PackedSequence; pad the batch and pass a tensor "
                            f"(or use torch.nn.{name})")
        check_sequence_input(name, input, self.batch_first, self.input_size)
        batched = input.dim() == 3
        seq_dim = 1 if batched and self.batch_first else 0
        if input.size(seq_dim) == 0:
            raise ValueError(f"{name} expected a sequence length larger than 0, got input of shape "
                             f"{tuple(input.shape)}")
        dtype = self.weight_ih_l0.dtype
        if input.dtype != dtype:
            hint = (" (token ids? embed or one-hot encode them first)" if not input.is_floating_point()
                    else f"; convert with input.to({dtype})")
            raise ValueError(f"{name} has {dtype} parameters but got input of dtype {input.dtype}{hint}")
        return batched

    def _check_state(self, hx: Optional[State], input: Tensor, batched: bool) -> Optional[State]:
        """Validate an initial state given as a tuple of tensors; return it (or None)."""
        if hx is None:
            return None
        name = type(self).__name__
        rows = self.num_layers * self.num_directions
        batch = input.size(0 if self.batch_first else 1) if batched else None
        expected = (rows, batch, self.hidden_size) if batched else (rows, self.hidden_size)
        layout = ("(num_layers * num_directions, batch, hidden_size)" if batched
                  else "(num_layers * num_directions, hidden_size) for unbatched input")
        for state_name, state in zip(self.state_names, hx):
            if not isinstance(state, Tensor):
                raise TypeError(f"{name} expected {state_name} to be a tensor, got {type(state).__name__}")
            shape = tuple(state.shape)
            if shape == expected:
                continue
            if batched and len(shape) == 3 and shape[0] == rows and shape[2] == self.hidden_size:
                raise ValueError(f"{name}: the batch size of {state_name} ({shape[1]}) differs from the "
                                 f"input's ({batch}); expected {state_name} of shape {expected}")
            raise ValueError(f"{name} expected {state_name} of shape {expected} {layout}, got {shape}")
        return hx

    # --- forward ------------------------------------------------------------------------------

    def _scan(self, x_proj: Tensor, state: State, weight_hh: Tensor, bias_hh: Optional[Tensor],
              reverse: bool) -> tuple[Tensor, State]:
        """Run one direction of one layer: x_proj (T, N, G*H) -> outputs (T, N, H) and the final state."""
        raise NotImplementedError

    def _forward(self, input: Tensor, hx: Optional[State]) -> tuple[Tensor, State]:
        batched = self._check_input(input)
        hx = self._check_state(hx, input, batched)
        if not batched:
            input = input.unsqueeze(1)
            hx = None if hx is None else tuple(s.unsqueeze(1) for s in hx)
        elif self.batch_first:
            input = input.transpose(0, 1)
        if hx is None:
            zeros = input.new_zeros(self.num_layers * self.num_directions, input.size(1), self.hidden_size)
            hx = (zeros,) * len(self.state_names)

        layer_input = input                                              # (T, N, D_in)
        final: list[State] = []
        all_weights = self.all_weights
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                weights = all_weights[k]
                weight_ih, weight_hh = weights[0], weights[1]
                bias_ih, bias_hh = (weights[2], weights[3]) if self.bias else (None, None)
                if self.fold_hidden_bias and bias_ih is not None:
                    bias_ih, bias_hh = bias_ih + bias_hh, None
                x_proj = F.linear(layer_input, weight_ih, bias_ih)      # (T, N, G*H), all steps at once
                out, state = self._scan(x_proj, tuple(s[k] for s in hx), weight_hh, bias_hh,
                                        reverse=direction == 1)
                outputs.append(out)                                      # (T, N, H)
                final.append(state)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)  # (T, N, D*H)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, p=self.dropout, training=True)

        output = layer_input
        h_n = tuple(torch.stack(parts) for parts in zip(*final))        # each (num_layers*D, N, H)
        if not batched:
            output = output.squeeze(1)
            h_n = tuple(s.squeeze(1) for s in h_n)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n


def _ordered(outputs: list[Tensor], reverse: bool) -> Tensor:
    """Stack per-step outputs at their original time index (the reverse direction produced them backwards)."""
    if reverse:
        outputs.reverse()
    return torch.stack(outputs)


class RNN(_RNNBase):
    """Elman RNN layer: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or ReLU), stacked and/or bidirectional.

    Shapes (D = 2 if bidirectional else 1): input (L, N, input_size), or (N, L, input_size) with
    batch_first, or (L, input_size) unbatched; hx (D*num_layers, N, hidden_size) or (D*num_layers,
    hidden_size), zeros when omitted. Returns (output, h_n): output (L, N, D*hidden_size) (batch_first
    respected), h_n (D*num_layers, N, hidden_size).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None) -> None:
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype)
        self.nonlinearity = nonlinearity
        self.reset_parameters()

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")

    def _scan(self, x_proj, state, weight_hh, bias_hh, reverse):
        (h,) = state
        steps = x_proj.unbind(0)      # unbind, not x_proj[t]: indexing makes backward quadratic in T
        outputs = []
        for x_t in (reversed(steps) if reverse else steps):
            h = rnn_step(x_t, h, weight_hh, bias_hh, self.nonlinearity)
            outputs.append(h)
        return _ordered(outputs, reverse), (h,)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        output, (h_n,) = self._forward(input, None if hx is None else (hx,))
        return output, h_n


class LSTM(_RNNBase):
    """LSTM layer (gate order i, f, g, o as in ``torch.nn.LSTM``), stacked and/or bidirectional.

    Shapes (D = 2 if bidirectional else 1): input (L, N, input_size), or (N, L, input_size) with
    batch_first, or (L, input_size) unbatched; hx = (h_0, c_0), each (D*num_layers, N, hidden_size) or
    (D*num_layers, hidden_size), zeros when omitted. Returns (output, (h_n, c_n)): output
    (L, N, D*hidden_size) (batch_first respected), h_n and c_n (D*num_layers, N, hidden_size).

    ``forget_bias``: when set, the forget-gate slice of every ``bias_ih_l*`` is set to it and that of
    ``bias_hh_l*`` to 0 at initialisation (b_if + b_hf = forget_bias). ``None`` keeps PyTorch's init.
    """

    num_gates = 4
    state_names = ("h_0", "c_0")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, forget_bias: Optional[float] = None) -> None:
        if forget_bias is not None and not bias:
            raise ValueError("forget_bias needs bias=True: there is no bias to set with bias=False")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype, proj_size=proj_size)
        self.forget_bias = forget_bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's U(-1/sqrt(H), 1/sqrt(H)), then the forget-gate bias if ``forget_bias`` is set."""
        super().reset_parameters()
        if self.forget_bias is not None:
            for weights in self.all_weights:
                _set_forget_bias(weights[2], weights[3], self.hidden_size, self.forget_bias)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (f", forget_bias={self.forget_bias}" if self.forget_bias is not None else "")

    def _scan(self, x_proj, state, weight_hh, bias_hh, reverse):
        h, c = state
        steps = x_proj.unbind(0)      # unbind, not x_proj[t]: indexing makes backward quadratic in T
        outputs = []
        for x_t in (reversed(steps) if reverse else steps):
            step = lstm_step(x_t, h, c, weight_hh, bias_hh)
            h, c = step.h, step.c
            outputs.append(h)
        return _ordered(outputs, reverse), (h, c)

    def forward(self, input: Tensor, hx: Optional[tuple[Tensor, Tensor]] = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("LSTM expects hx as a tuple (h_0, c_0) of two tensors, or None")
        output, (h_n, c_n) = self._forward(input, None if hx is None else tuple(hx))
        return output, (h_n, c_n)


class GRU(_RNNBase):
    """GRU layer (gate order r, z, n as in ``torch.nn.GRU``), stacked and/or bidirectional.

    ``reset_after=True`` (default) computes what ``torch.nn.GRU`` computes; ``reset_after=False`` applies
    the reset gate before the hidden matrix product, as in Cho et al. (2014) (see :mod:`rnnlib.cells`).
    Both use the same parameters.

    Shapes (D = 2 if bidirectional else 1): input (L, N, input_size), or (N, L, input_size) with
    batch_first, or (L, input_size) unbatched; hx (D*num_layers, N, hidden_size) or (D*num_layers,
    hidden_size), zeros when omitted. Returns (output, h_n): output (L, N, D*hidden_size) (batch_first
    respected), h_n (D*num_layers, N, hidden_size).
    """

    num_gates = 3
    fold_hidden_bias = False

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, reset_after: bool = True) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype)
        self.reset_after = reset_after
        self.reset_parameters()

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.reset_after else ", reset_after=False")

    def _scan(self, x_proj, state, weight_hh, bias_hh, reverse):
        (h,) = state
        steps = x_proj.unbind(0)      # unbind, not x_proj[t]: indexing makes backward quadratic in T
        outputs = []
        for x_t in (reversed(steps) if reverse else steps):
            h = gru_step(x_t, h, weight_hh, bias_hh, self.reset_after).h
            outputs.append(h)
        return _ordered(outputs, reverse), (h,)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        output, (h_n,) = self._forward(input, None if hx is None else (hx,))
        return output, h_n


# ---------------------------------------------------------------------------------------------
# Gate tracing
# ---------------------------------------------------------------------------------------------

def trace_gates(module: nn.Module, input: Tensor, hx: Union[Tensor, tuple[Tensor, Tensor], None] = None,
                layer: int = 0) -> dict[str, Tensor]:
    """Record every gate of one layer at every time step, for rnnlib's or torch.nn's LSTM and GRU.

    Runs layers 0 … ``layer`` from the module's own weights (same names in both libraries), without
    dropout (as in eval mode) and without gradients. ``input`` and ``hx`` are what the module's
    ``forward`` takes (``batch_first`` respected). Single-direction modules only.

    Returns a dict of detached tensors of shape (seq_len, batch, hidden_size) (time first whatever
    ``batch_first`` is; (seq_len, hidden_size) for unbatched input): for an LSTM "i", "f", "g", "o",
    "c", "h"; for a GRU "r", "z", "n", "h". "h" of the last layer equals the module's output.
    """
    if isinstance(module, (LSTM, nn.LSTM)):
        kind, fields = "LSTM", ("i", "f", "g", "o", "c", "h")
    elif isinstance(module, (GRU, nn.GRU)):
        kind, fields = "GRU", ("r", "z", "n", "h")
    else:
        raise TypeError(f"trace_gates works for rnnlib or torch.nn LSTM and GRU modules, got {type(module).__name__}")
    if module.bidirectional:
        raise ValueError("trace_gates supports single-direction modules only (bidirectional=False)")
    if getattr(module, "proj_size", 0):
        raise ValueError("trace_gates does not support LSTMs with proj_size > 0")
    if not 0 <= layer < module.num_layers:
        raise ValueError(f"layer must be in 0 … {module.num_layers - 1}, got {layer}")
    if input.dim() not in (2, 3) or input.size(-1) != module.input_size:
        raise ValueError(f"{kind} expected input with {module.input_size} features (input_size) and 2 or 3 "
                         f"dimensions, got input of shape {tuple(input.shape)}")
    batched = input.dim() == 3
    x = input if not batched else (input.transpose(0, 1) if module.batch_first else input)
    if not batched:
        x = x.unsqueeze(1)
    states = (tuple(hx) if kind == "LSTM" else (hx,)) if hx is not None else None
    if states is not None:
        expected = (module.num_layers, x.size(1), module.hidden_size) if batched else \
            (module.num_layers, module.hidden_size)
        for state_name, state in zip(("h_0", "c_0"), states):
            if tuple(state.shape) != expected:
                raise ValueError(f"{kind} expected {state_name} of shape {expected} "
                                 f"(num_layers, batch, hidden_size), got {tuple(state.shape)}")
        if not batched:
            states = tuple(s.unsqueeze(1) for s in states)
    reset_after = getattr(module, "reset_after", True)

    with torch.no_grad():
        for k in range(layer + 1):
            weight_ih, weight_hh = getattr(module, f"weight_ih_l{k}"), getattr(module, f"weight_hh_l{k}")
            bias_ih, bias_hh = getattr(module, f"bias_ih_l{k}", None), getattr(module, f"bias_hh_l{k}", None)
            h = x.new_zeros(x.size(1), module.hidden_size) if states is None else states[0][k]
            c = (x.new_zeros(x.size(1), module.hidden_size) if states is None else states[1][k]) \
                if kind == "LSTM" else None
            records = []
            for x_t in F.linear(x, weight_ih, bias_ih).unbind(0):
                if kind == "LSTM":
                    step = lstm_step(x_t, h, c, weight_hh, bias_hh)
                    h, c = step.h, step.c
                else:
                    step = gru_step(x_t, h, weight_hh, bias_hh, reset_after)
                    h = step.h
                records.append(step)
            trace = {name: torch.stack([getattr(step, name) for step in records]) for name in fields}
            x = trace["h"]                                                # input of the next layer
    if not batched:
        trace = {name: value.squeeze(1) for name, value in trace.items()}
    return trace
