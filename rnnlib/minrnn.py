r"""minGRU and minLSTM (Feng et al. 2024): the GRU and the LSTM cut down until they train with a parallel scan.

Take the GRU of chapter 7.3 and remove :math:`h_{t-1}` from the update gate and from the candidate (and
with it the reset gate, which only acted on :math:`h_{t-1}`), and the tanh of the candidate. What is left
is a *linear* recurrence in :math:`h` whose coefficients depend on the input only (:math:`\sigma` the
logistic sigmoid, :math:`g` a positive activation, see below)::

    minGRU:   z_t  = sigmoid(W_z x_t + b_z)                      update gate
              h~_t = g(W_h x_t + b_h)                            candidate
              h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t            a_t = 1 - z_t, b_t = z_t * h~_t

    minLSTM:  f_t  = sigmoid(W_f x_t + b_f),  i_t = sigmoid(W_i x_t + b_i)
              f'_t = f_t / (f_t + i_t),       i'_t = i_t / (f_t + i_t)   normalised so that f' + i' = 1
              h~_t = g(W_h x_t + b_h)
              h_t  = f'_t * h_{t-1} + i'_t * h~_t                a_t = f'_t, b_t = i'_t * h~_t

Note the convention: here, as in the paper, :math:`z_t` weights the *new* candidate; in PyTorch's GRU
(chapter 7.3) :math:`z_t` weights the old state. Since :math:`1 - \sigma(k) = \sigma(-k)` the two are the
same family of models with the gate's weights negated.

Every :math:`(a_t, b_t)` is computed for all steps at once from one matrix product, and the recurrence
:math:`h_t = a_t h_{t-1} + b_t` is evaluated by one of the scans of :mod:`rnnlib.scan` (``scan=``):
``"log"`` (default, :func:`~rnnlib.scan.log_scan`, as in the paper), ``"doubling"``, ``"tree"``, or
``"loop"`` (the same model, one step after another in Python). The log-space scan runs in chunks of
``LOG_SCAN_CHUNK`` steps, which keeps its rounding error from growing with the length. All four compute
the same function; ``step`` advances the state by one step for generation and gives the same numbers.

The log-space scan needs :math:`a_t, b_t > 0`. The gates are positive by construction and their logs are
computed without ever rounding to :math:`\log 0`: :math:`\log(1 - \sigma(k)) = -\mathrm{softplus}(k)`,
:math:`\log \sigma(k) = -\mathrm{softplus}(-k)`. The candidate is made positive by
:math:`g(x) = x + \tfrac12` for :math:`x \ge 0` and :math:`\sigma(x)` for :math:`x < 0` (continuous,
increasing, and linear for positive inputs, where tanh would saturate), with
:math:`\log g(x) = \log(x + \tfrac12)` or :math:`-\mathrm{softplus}(-x)`.

Parameters follow ``torch.nn.GRU``'s naming: ``weight_ih_l{k}`` of shape ``(G * hidden_size, in)`` and
``bias_ih_l{k}`` of shape ``(G * hidden_size,)`` for layer ``k``, with the rows in the order (z, h~) for
the minGRU (G = 2) and (f, i, h~) for the minLSTM (G = 3). There is no ``weight_hh``: nothing multiplies
:math:`h_{t-1}` by a matrix any more. Initialisation as in PyTorch's recurrent layers, U(-1/sqrt(H), 1/sqrt(H)).

:class:`MinRNNLM` stacks these layers into a character language model the way Transformer blocks are
stacked: pre-norm residual blocks, a minGRU (or minLSTM) layer and then a small MLP in each.

References: Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, "Were RNNs all we needed?" (2024); Heinsen,
"Efficient parallelization of a ubiquitous sequential computation" (2023); Cho et al. (2014);
Hochreiter & Schmidhuber (1997).
"""
from __future__ import annotations

import warnings
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cells import uniform_init_
from .layers import check_sequence_input
from .models import check_token_ids, generate_text
from .scan import linear_recurrence, log_scan, scan_doubling, scan_tree

__all__ = ["MinGRU", "MinLSTM", "MinRNNLM", "g", "log_g", "SCANS"]

SCANS = ("log", "doubling", "tree", "loop")
#: The log-space sums restart every 64 steps, so the float32 error stays that of 64 steps (see rnnlib.scan).
LOG_SCAN_CHUNK = 64


def g(x: Tensor) -> Tensor:
    """The positive candidate activation: x + 1/2 for x >= 0, sigmoid(x) for x < 0."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    """log g(x), computed without taking the log of anything that can be 0 or negative."""
    # clamp: no log of a negative number in the branch torch.where discards (its NaN would reach the gradient);
    # clamp, not relu, whose gradient at exactly 0 is 0
    return torch.where(x >= 0, torch.log(x.clamp(min=0) + 0.5), -F.softplus(-x))


class _MinRNNBase(nn.Module):
    """Parameters, checks and the layer loop shared by MinGRU and MinLSTM.

    Subclasses set ``num_chunks`` and implement ``_coefficients`` (linear space) and ``_log_coefficients``.
    """

    num_chunks: int = 2

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, scan: str = "log", device=None, dtype=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1] (the probability of zeroing an element), got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout acts between stacked layers only, so dropout={dropout} does nothing with "
                          "num_layers=1", UserWarning, stacklevel=3)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.scan = scan
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}",
                                    nn.Parameter(torch.empty(self.num_chunks * hidden_size, layer_in, **factory)))
            if bias:
                self.register_parameter(f"bias_ih_l{layer}",
                                        nn.Parameter(torch.empty(self.num_chunks * hidden_size, **factory)))
        self.reset_parameters()

    @property
    def scan(self) -> str:
        return self._scan

    @scan.setter
    def scan(self, value: str) -> None:
        if value not in SCANS:
            raise ValueError(f"scan must be one of {', '.join(map(repr, SCANS))}, got {value!r}")
        self._scan = value

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as in PyTorch's recurrent layers."""
        uniform_init_(self, self.hidden_size)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0, "scan": "log"}
        for name, default in defaults.items():
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text

    # --- the gates: subclasses -----------------------------------------------------------------

    def _coefficients(self, proj: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b) from the input projection (..., G*H): the recurrence's coefficients in linear space."""
        raise NotImplementedError

    def _log_coefficients(self, proj: Tensor) -> tuple[Tensor, Tensor]:
        """(log a, log b), computed stably (never the log of a number that rounded to 0)."""
        raise NotImplementedError

    # --- checks ---------------------------------------------------------------------------------

    def _check_input(self, input: Tensor, what: str = "input") -> bool:
        name = type(self).__name__
        check_sequence_input(name, input, self.batch_first, self.input_size, what)
        dtype = self.weight_ih_l0.dtype
        if input.dtype != dtype:
            hint = (" (token ids? embed them first)" if not input.is_floating_point()
                    else f"; convert with input.to({dtype})")
            raise ValueError(f"{name} has {dtype} parameters but got {what} of dtype {input.dtype}{hint}")
        batched = input.dim() == 3
        seq_dim = 1 if batched and self.batch_first else 0
        if input.size(seq_dim) == 0:
            raise ValueError(f"{name} expected a sequence length larger than 0, got {what} of shape {tuple(input.shape)}")
        return batched

    def _check_state(self, hx: Optional[Tensor], batch: Optional[int]) -> None:
        if hx is None:
            return
        name = type(self).__name__
        expected = (self.num_layers, self.hidden_size) if batch is None else (self.num_layers, batch, self.hidden_size)
        if not isinstance(hx, Tensor):
            raise TypeError(f"{name} expected h_0 to be a tensor of shape {expected}, got {type(hx).__name__}")
        if tuple(hx.shape) != expected:
            raise ValueError(f"{name} expected h_0 of shape {expected} (num_layers, batch, hidden_size), "
                             f"got {tuple(hx.shape)}")

    # --- forward --------------------------------------------------------------------------------

    def _layer(self, x: Tensor, layer: int, h0: Tensor) -> Tensor:
        """One layer over a time-first sequence: x (T, N, D_in), h0 (N, H) -> all states (T, N, H)."""
        proj = F.linear(x, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_ih_l{layer}", None))
        if self.scan == "log":
            log_a, log_b = self._log_coefficients(proj)                  # (T, N, H) each
            return log_scan(log_a, log_b, h0, dim=0, chunk_size=LOG_SCAN_CHUNK)
        a, b = self._coefficients(proj)                                  # (T, N, H) each
        run = {"doubling": scan_doubling, "tree": scan_tree, "loop": linear_recurrence}[self.scan]
        return run(a, b, h0, dim=0)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``input`` (L, N, input_size) (or (N, L, input_size) with batch_first, or (L, input_size)),
        ``hx`` (num_layers, N, H) or None for zeros -> ``(output (L, N, H), h_n (num_layers, N, H))``."""
        batched = self._check_input(input)
        if not batched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        self._check_state(hx, input.size(1) if batched else None)
        if hx is not None and not batched:
            hx = hx.unsqueeze(1)
        if hx is None:
            hx = input.new_zeros(self.num_layers, input.size(1), self.hidden_size)
        x, finals = input, []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
            x = self._layer(x, layer, hx[layer])                         # (T, N, H)
            finals.append(x[-1])
        h_n = torch.stack(finals)                                        # (num_layers, N, H)
        if not batched:
            return x.squeeze(1), h_n.squeeze(1)
        return (x.transpose(0, 1) if self.batch_first else x), h_n

    def step(self, input: Tensor, hx: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """One time step, for generation: ``input`` (N, input_size) or (input_size,), ``hx`` (num_layers, N, H)
        or None -> ``(output (N, H), h_n (num_layers, N, H))``. Equal to ``forward`` on a sequence of length 1,
        and, step after step, to ``forward`` on the whole sequence (in eval mode: ``step`` applies no dropout)."""
        if not isinstance(input, Tensor) or input.dim() not in (1, 2):
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"{type(self).__name__}.step expected one time step of shape (batch, {self.input_size}) "
                             f"or ({self.input_size},), got {got}; for a whole sequence call the layer itself")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)                     # (N, D)
        self._check_input(x[None], "input")
        self._check_state(hx, x.size(0) if batched else None)
        h_prev = x.new_zeros(self.num_layers, x.size(0), self.hidden_size) if hx is None else (
            hx if batched else hx.unsqueeze(1))
        states = []
        for layer in range(self.num_layers):
            proj = F.linear(x, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_ih_l{layer}", None))
            a, b = self._coefficients(proj)                              # (N, H) each
            x = a * h_prev[layer] + b                                    # h_t = a_t h_{t-1} + b_t
            states.append(x)
        h_n = torch.stack(states)
        return (x, h_n) if batched else (x.squeeze(0), h_n.squeeze(1))


class MinGRU(_MinRNNBase):
    """minGRU layer: ``h_t = (1 - z_t) h_{t-1} + z_t g(W_h x_t + b_h)``, ``z_t = sigmoid(W_z x_t + b_z)``.

    Arguments as ``torch.nn.GRU`` (``input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
    dropout=0.0``) plus ``scan`` ("log", "doubling", "tree" or "loop"). Shapes: input (L, N, input_size),
    (N, L, input_size) with batch_first, or (L, input_size); h_0 (num_layers, N, H), zeros when omitted.
    Returns ``(output (L, N, H), h_n (num_layers, N, H))``. Parameters: ``weight_ih_l{k}`` (2H, in),
    ``bias_ih_l{k}`` (2H,), rows (z, h~).
    """

    num_chunks = 2

    def _coefficients(self, proj):
        k, c = proj.chunk(2, dim=-1)
        z = torch.sigmoid(k)
        return torch.sigmoid(-k), z * g(c)                              # a = 1 - z as sigmoid(-k): no rounding to 0

    def _log_coefficients(self, proj):
        k, c = proj.chunk(2, dim=-1)
        return -F.softplus(k), -F.softplus(-k) + log_g(c)               # log(1 - z), log z + log g(c)


class MinLSTM(_MinRNNBase):
    """minLSTM layer: ``h_t = f'_t h_{t-1} + i'_t g(W_h x_t + b_h)`` with ``f' = f / (f + i)``, ``i' = i / (f + i)``.

    Same arguments, shapes and outputs as :class:`MinGRU`. Parameters: ``weight_ih_l{k}`` (3H, in),
    ``bias_ih_l{k}`` (3H,), rows (f, i, h~).
    """

    num_chunks = 3

    def _coefficients(self, proj):
        k_f, k_i, c = proj.chunk(3, dim=-1)
        # f / (f + i) = 1 / (1 + i / f) = sigmoid(log f - log i): no division, no 0 / 0
        d = F.softplus(-k_f) - F.softplus(-k_i)                          # log i - log f
        return torch.sigmoid(-d), torch.sigmoid(d) * g(c)

    def _log_coefficients(self, proj):
        k_f, k_i, c = proj.chunk(3, dim=-1)
        d = F.softplus(-k_f) - F.softplus(-k_i)                          # log i - log f
        return -F.softplus(d), -F.softplus(-d) + log_g(c)                # log f', log i' + log g(c)


class MinRNNLM(nn.Module):
    r"""A character language model of stacked minGRU (or minLSTM) layers in pre-norm residual blocks.

    .. math::
        Z^{(0)} = E[x], \quad
        U^{(l)} = Z^{(l-1)} + \mathrm{minGRU}^{(l)}(\mathrm{LN}(Z^{(l-1)})), \quad
        Z^{(l)} = U^{(l)} + \mathrm{MLP}^{(l)}(\mathrm{LN}(U^{(l)})), \quad
        \mathrm{logits} = W\, \mathrm{LN}(Z^{(L)}) + b,

    with :math:`\mathrm{MLP}(u) = W_2\, \mathrm{GELU}(W_1 u)` of width ``mlp_ratio * hidden_size``
    (``mlp_ratio=0`` leaves the MLPs out). The embedding has ``hidden_size`` columns so that the residual
    sums line up.

    ``forward(x (B, T) ids, state=None) -> (logits (B, T, V), state (num_layers, B, H))``, like
    :class:`rnnlib.models.CharLM`, so ``train_char_lm`` and ``evaluate_lm`` train and score it. The state
    is the hidden state of every layer: its size does not depend on how much text has been read.
    :meth:`generate` reads the prompt in parallel (the scan) and then produces each character with
    :meth:`step` (one step of every layer).
    """

    def __init__(self, vocab_size: int, hidden_size: int = 128, num_layers: int = 2, cell: str = "mingru",
                 mlp_ratio: int = 2, dropout: float = 0.0, scan: str = "log"):
        super().__init__()
        layers = {"mingru": MinGRU, "minlstm": MinLSTM}
        if cell not in layers:
            raise ValueError(f"cell must be 'mingru' or 'minlstm', got {cell!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.hidden_size, self.num_layers, self.cell = vocab_size, hidden_size, num_layers, cell
        H = hidden_size
        self.embedding = nn.Embedding(vocab_size, H)
        self.norms1 = nn.ModuleList(nn.LayerNorm(H) for _ in range(num_layers))
        self.rnns = nn.ModuleList(layers[cell](H, H, scan=scan) for _ in range(num_layers))
        self.norms2 = nn.ModuleList(nn.LayerNorm(H) if mlp_ratio else nn.Identity() for _ in range(num_layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(H, mlp_ratio * H), nn.GELU(), nn.Linear(mlp_ratio * H, H)) if mlp_ratio
            else nn.Identity() for _ in range(num_layers))
        self.mlp_ratio = mlp_ratio
        self.drop = nn.Dropout(dropout)
        self.norm_out = nn.LayerNorm(H)
        self.head = nn.Linear(H, vocab_size)

    @property
    def scan(self) -> str:
        return self.rnns[0].scan

    @scan.setter
    def scan(self, value: str) -> None:
        for rnn in self.rnns:
            rnn.scan = value

    def _block(self, l: int, z: Tensor, h: Optional[Tensor], step: bool) -> tuple[Tensor, Tensor]:
        """Block l on z (B, T, H) (or (B, H) when ``step``) with layer state h (B, H) -> (z, new state)."""
        hx = None if h is None else h[None]                              # (1, B, H)
        if step:
            out, h_n = self.rnns[l].step(self.norms1[l](z), hx)          # (B, H)
        else:
            out, h_n = self.rnns[l](self.norms1[l](z).transpose(0, 1), hx)   # time first: (T, B, H)
            out = out.transpose(0, 1)                                    # (B, T, H)
        z = z + self.drop(out)
        if self.mlp_ratio:
            z = z + self.drop(self.mlps[l](self.norms2[l](z)))
        return z, h_n[0]

    def _run(self, x: Tensor, state: Optional[Tensor], step: bool) -> tuple[Tensor, Tensor]:
        check_token_ids(x[:, None] if step else x, self.vocab_size)
        if state is not None and tuple(state.shape) != (self.num_layers, x.size(0), self.hidden_size):
            raise ValueError(f"expected state of shape {(self.num_layers, x.size(0), self.hidden_size)} "
                             f"(num_layers, batch, hidden_size), got {tuple(state.shape)}")
        z = self.embedding(x)                                            # (B, T, H), or (B, H) for a step
        new_state = []
        for l in range(self.num_layers):
            z, h = self._block(l, z, None if state is None else state[l], step)
            new_state.append(h)
        return self.head(self.norm_out(z)), torch.stack(new_state)

    def forward(self, x: Tensor, state: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"expected token ids of shape (batch, seq_len), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        return self._run(x, state, step=False)                           # (B, T, V), (L, B, H)

    def step(self, x: Tensor, state: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """One character per sequence: ``x`` (B,) ids -> (logits (B, V), state (num_layers, B, H))."""
        if not isinstance(x, Tensor) or x.dim() != 1:
            raise ValueError(f"step expects one token id per sequence, shape (batch,), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        return self._run(x, state, step=True)

    def _generate_step(self, ids: Tensor, state):
        if ids.size(1) == 1 and state is not None:                       # one new character: the step mode
            return self.step(ids[:, 0], state)
        logits, state = self(ids, state)                                 # the prompt: all at once, by the scan
        return logits[:, -1], state

    def generate(self, vocab, prompt: str, length: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 generator: Union[torch.Generator, int, None] = None) -> str:
        """Like :meth:`rnnlib.models.CharLM.generate`: the prompt in parallel, then one step per character."""
        return generate_text(self, self._generate_step, vocab, prompt, length, self.vocab_size, temperature,
                             top_k, generator)
