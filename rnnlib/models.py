r"""The models the chapters train: a character-level language model and a sequence classifier.

Every model is built around one recurrent layer chosen by two arguments:

* ``cell``: ``"rnn"``, ``"lstm"`` or ``"gru"``;
* ``impl``: ``"torch"`` (``torch.nn.RNN/LSTM/GRU``, fused and fast) or ``"rnnlib"`` (the course's
  from-scratch ``rnnlib.layers``). Both use PyTorch's parameter names (``weight_ih_l0``, ...), so a
  ``state_dict`` saved with one loads into the other and gives the same outputs.

Character-level language model (:class:`CharLM`). With :math:`x_t` the one-hot vector (or embedding) of
character :math:`t`,

.. math::  H_t = \mathrm{layer}(x_t, H_{t-1}), \qquad O_t = H_t W_{hq} + b_q,

where :math:`O_t` are the logits of the character at :math:`t + 1` (for an LSTM the state is the pair
:math:`(H_t, C_t)`). Sampling draws the next character from
:math:`p = \mathrm{softmax}(O_t / \tau)`, optionally restricted to the :math:`k` most likely characters.

Sequence classifier (:class:`SequenceClassifier`) over a right-padded batch, sequence :math:`b` having
:math:`L_b` real tokens. It classifies from :math:`\overrightarrow{h}_{L_b - 1}`, the forward state at the
last real token; a bidirectional one from :math:`[\overrightarrow{h}_{L_b - 1}; \overleftarrow{h}_0]`,
where :math:`\overleftarrow{h}_0` is the backward state after reading the real tokens from the last one
to the first. Padding is never read before a real token, in either direction (:class:`PaddedRNN`).

References: Elman (1990) Finding structure in time; Hochreiter & Schmidhuber (1997) Long short-term
memory; Cho et al. (2014) GRU; Schuster & Paliwal (1997) Bidirectional recurrent neural networks;
Karpathy (2015) The unreasonable effectiveness of recurrent neural networks; Fan et al. (2018)
Hierarchical neural story generation (top-k sampling).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS = ("rnn", "lstm", "gru")
IMPLS = ("torch", "rnnlib")
_CLASS_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
# Options that only rnnlib.layers understands (torch.nn would raise a bare TypeError).
_RNNLIB_ONLY = {"forget_bias": None, "reset_after": True}

State = Union[Tensor, tuple[Tensor, Tensor]]


# ---------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------
def _recurrent_class(cell: str, impl: str, kind: str) -> type:
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    if impl == "torch":
        module = nn
    elif impl == "rnnlib":
        if kind == "layer":
            from rnnlib import layers as module
        else:
            from rnnlib import cells as module
    else:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return getattr(module, _CLASS_NAMES[cell] + ("Cell" if kind == "cell" else ""))


def _layer_kwargs(impl: str, kwargs: dict) -> dict:
    """Refuse options torch.nn does not have (it would raise a bare TypeError), drop harmless defaults."""
    kwargs = dict(kwargs)
    if impl == "torch":
        for key, torch_value in _RNNLIB_ONLY.items():
            value = kwargs.pop(key, torch_value)
            if value != torch_value:
                raise ValueError(f"{key}={value!r} is an option of rnnlib.layers, not torch.nn: "
                                 "pass impl='rnnlib'")
    return kwargs


def recurrent_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    batch_first: bool = True,
    dropout: float = 0.0,
    bidirectional: bool = False,
    impl: str = "torch",
    **layer_kwargs,
) -> nn.Module:
    """``torch.nn.{RNN,LSTM,GRU}`` (``impl="torch"``) or ``rnnlib.layers.{RNN,LSTM,GRU}`` (``"rnnlib"``).

    Extra keyword arguments go to the layer: ``nonlinearity`` (RNN), ``forget_bias`` (rnnlib LSTM),
    ``reset_after`` (rnnlib GRU).
    """
    layer_kwargs = _layer_kwargs(impl, layer_kwargs)
    cls = _recurrent_class(cell, impl, "layer")
    return cls(input_size, hidden_size, num_layers=num_layers, batch_first=batch_first, dropout=dropout,
               bidirectional=bidirectional, **layer_kwargs)


def recurrent_cell(cell: str, input_size: int, hidden_size: int, *, impl: str = "torch", **cell_kwargs) -> nn.Module:
    """``torch.nn.{RNN,LSTM,GRU}Cell`` (``impl="torch"``) or ``rnnlib.cells.{RNN,LSTM,GRU}Cell``."""
    cell_kwargs = _layer_kwargs(impl, cell_kwargs)
    return _recurrent_class(cell, impl, "cell")(input_size, hidden_size, **cell_kwargs)


def hidden_of(state: State) -> Tensor:
    """The hidden state ``h`` of a state that is ``h`` (RNN, GRU) or ``(h, c)`` (LSTM)."""
    return state[0] if isinstance(state, tuple) else state


def zero_state(cell: str, num_states: int, batch_size: int, hidden_size: int,
               device=None, dtype=None) -> State:
    """Zeros shaped like the state a layer returns: ``(num_states, batch, hidden)``, a pair for an LSTM."""
    h = torch.zeros(num_states, batch_size, hidden_size, device=device, dtype=dtype)
    return (h, h.clone()) if cell == "lstm" else h


def check_token_ids(x: Tensor, vocab_size: int, name: str = "input") -> None:
    """A clear error for token ids of the wrong type, rank or range (instead of an index error deep inside)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected {name} to be a tensor of token ids, got {type(x).__name__}")
    if x.dtype not in (torch.long, torch.int32):
        raise TypeError(f"expected {name} to hold integer token ids (torch.long or torch.int32), got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"expected {name} of shape (batch, seq_len) with token ids, got {tuple(x.shape)}")
    if x.size(1) == 0:
        raise ValueError(f"expected {name} to have at least one time step, got shape {tuple(x.shape)}")
    low, high = int(x.min()), int(x.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"{name} token ids must be in [0, {vocab_size - 1}] (vocab_size={vocab_size}), got values from {low} to "
            f"{high}. Was the model built for a smaller vocabulary than the one that encoded the text?"
        )


def check_lengths(lengths: Tensor, x: Tensor) -> Tensor:
    """Validate ``lengths`` (B,) against a right-padded batch ``x`` (B, T, ...); return them as a CPU long tensor."""
    batch, steps = x.shape[:2]
    if not isinstance(lengths, Tensor) or lengths.shape != (batch,):
        shape = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"expected lengths of shape ({batch},), one per sequence, got {shape}")
    lengths = lengths.detach().to("cpu", torch.long)
    if int(lengths.min()) < 1 or int(lengths.max()) > steps:
        raise ValueError(
            f"lengths must be between 1 and the padded length {steps}, got values from {int(lengths.min())} "
            f"to {int(lengths.max())}: every sequence needs at least one real token"
        )
    return lengths


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of a right-padded batch within its own length; padding stays where it is.

    ``x`` is ``(B, T, ...)``, ``lengths`` is ``(B,)``. Row ``b`` becomes
    ``x[b, L-1], ..., x[b, 0], x[b, L], ..., x[b, T-1]`` with ``L = lengths[b]``. Applying it twice gives
    ``x`` back. Running a forward recurrence over the result is the backward direction of a bidirectional
    layer that never reads padding first.

    >>> reverse_padded(torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]), torch.tensor([3, 2]))
    tensor([[3, 2, 1, 0],
            [5, 4, 0, 0]])
    """
    lengths = check_lengths(lengths, x).to(x.device)
    t = torch.arange(x.size(1), device=x.device).expand(x.size(0), -1)  # (B, T)
    source = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    rows = torch.arange(x.size(0), device=x.device)[:, None]
    return x[rows, source]


def embed_tokens(x: Tensor, embedding: Optional[nn.Embedding], vocab_size: int, dtype: torch.dtype) -> Tensor:
    """``(B, T)`` ids to ``(B, T, D)`` inputs: the embedding if there is one, else one-hot vectors."""
    if embedding is None:
        return F.one_hot(x.long(), vocab_size).to(dtype)
    return embedding(x)


# ---------------------------------------------------------------------------------------------------------
# Sampling, shared by every language model that generates text
# ---------------------------------------------------------------------------------------------------------
def _as_generator(generator: Union[torch.Generator, int, None]) -> Optional[torch.Generator]:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


def _check_sampling(temperature: float, top_k: Optional[int], dtype: Optional[torch.dtype] = None) -> None:
    """Refuse a temperature that is not a finite number >= 0, or (for logits of ``dtype``) a subnormal one."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or math.isnan(temperature) \
            or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    if math.isinf(temperature):
        raise ValueError("temperature must be finite: at inf every character is equally likely, whatever the model "
                         "says. Use e.g. 1.0 (the model as it is), more to flatten it, or 0 for greedy decoding")
    if dtype is not None and 0 < temperature < torch.finfo(dtype).tiny:
        raise ValueError(f"temperature {temperature!r} is below the smallest normal {dtype} number "
                         f"({torch.finfo(dtype).tiny:.3g}), so logits / temperature cannot be computed; "
                         "use temperature=0 for greedy decoding (what a tiny temperature approaches)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                generator: Union[torch.Generator, int, None] = None) -> Tensor:
    """Draw one token per row from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest.

    ``logits`` is ``(B, V)``; returns ``(B,)`` ids. ``temperature=0`` means greedy (the arg max).
    ``generator`` is a ``torch.Generator``, an int seed, or ``None`` for PyTorch's global generator.
    """
    _check_sampling(temperature, top_k, logits.dtype)
    if bool(torch.isnan(logits).any() | torch.isposinf(logits).any()):
        raise ValueError("the model's logits hold NaN or +inf, so there is nothing to sample from: its weights "
                         "are broken (a diverged training run?)")
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits / temperature
    if bool((torch.isinf(scaled) & torch.isfinite(logits)).any()):  # a tiny temperature overflowed:
        # divide the gaps to the largest logit instead (all <= 0, so they cannot overflow upwards)
        scaled = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    logits = scaled
    if top_k is not None and top_k < logits.size(-1):
        kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    generator = _as_generator(generator)
    device = generator.device if generator is not None else probs.device
    ids = torch.multinomial(probs.to(device), num_samples=1, generator=generator)
    return ids.squeeze(-1).to(logits.device)


# step(ids (1, n), cache) -> (logits of the last position (1, V), cache)
StepFn = Callable[[Tensor, object], tuple[Tensor, object]]


def generate_text(model: nn.Module, step: StepFn, vocab, prompt: str, length: int, vocab_size: int,
                  temperature: float = 1.0, top_k: Optional[int] = None,
                  generator: Union[torch.Generator, int, None] = None) -> str:
    """Warm ``step`` up on ``prompt``, then sample ``length`` characters one at a time, carrying the cache.

    Returns the prompt followed by the new characters. Runs under ``torch.no_grad()`` in eval mode (no
    dropout) and puts ``model`` back into the mode it was in.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(
            f"prompt must be a non-empty string: give at least one character to start from, got {prompt!r}"
        )
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be a non-negative int (how many characters to add), got {length!r}")
    if len(vocab) != vocab_size:
        raise ValueError(f"the vocabulary has {len(vocab)} tokens but the model was built for {vocab_size}")
    ids = vocab.encode(prompt)  # a clear ValueError for a character outside the vocabulary
    _check_sampling(temperature, top_k, next(model.parameters()).dtype)
    generator = _as_generator(generator)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits, cache = step(ids[None].to(device), None)
            new_ids = []
            for _ in range(length):
                next_id = sample_next(logits, temperature, top_k, generator)  # (1,)
                new_ids.append(int(next_id))
                logits, cache = step(next_id.view(1, 1), cache)
    finally:
        model.train(was_training)
    return prompt + vocab.decode(new_ids)


# ---------------------------------------------------------------------------------------------------------
# Character-level language model
# ---------------------------------------------------------------------------------------------------------
class CharLM(nn.Module):
    """A character-level language model: one-hot or embedded characters, a recurrent layer, a linear head.

    Shapes (batch first): ``x`` is ``(B, T)`` token ids; ``forward`` returns ``logits`` ``(B, T, V)``, where
    ``logits[:, t]`` scores the character at ``t + 1``, and the final ``state`` (``(num_layers * D, B, H)``,
    a pair ``(h, c)`` for an LSTM) to pass to the next call on the continuation of the text.

    ``dropout`` acts in two places: between stacked layers (the layer's own ``dropout``, so only when
    ``num_layers > 1``) and on the last layer's output before the linear head. It never touches the
    inputs or the recurrent connections.

    Extra keyword arguments go to the layer (``nonlinearity``, ``forget_bias``, ...). ``bidirectional=True``
    is accepted only to *demonstrate* why a bidirectional model cannot be a language model: its backward
    direction has already read the character it is asked to predict (the chapter shows this leak).
    """

    def __init__(self, vocab_size: int, hidden_size: int = 256, num_layers: int = 1, cell: str = "lstm",
                 embedding_dim: Optional[int] = None, dropout: float = 0.0, impl: str = "torch", **layer_kwargs):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.hidden_size, self.num_layers, self.cell = vocab_size, hidden_size, num_layers, cell
        self.num_directions = 2 if layer_kwargs.get("bidirectional", False) else 1
        self.embedding = nn.Embedding(vocab_size, embedding_dim) if embedding_dim else None
        self.rnn = recurrent_layer(cell, embedding_dim or vocab_size, hidden_size, num_layers,
                                   dropout=dropout if num_layers > 1 else 0.0, impl=impl, **layer_kwargs)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_directions * hidden_size, vocab_size)

    def init_state(self, batch_size: int, device=None) -> State:
        """The zero state for ``batch_size`` sequences (what ``state=None`` means)."""
        return zero_state(self.cell, self.num_layers * self.num_directions, batch_size, self.hidden_size,
                          device=device or self.head.weight.device, dtype=self.head.weight.dtype)

    def forward(self, x: Tensor, state: Optional[State] = None) -> tuple[Tensor, State]:
        check_token_ids(x, self.vocab_size)
        inputs = embed_tokens(x, self.embedding, self.vocab_size, self.head.weight.dtype)  # (B, T, D)
        h, state = self.rnn(inputs, state)  # (B, T, num_directions * H)
        return self.head(self.drop(h)), state  # (B, T, V)

    def _step(self, x: Tensor, state: Optional[State]) -> tuple[Tensor, State]:
        logits, state = self(x, state)
        return logits[:, -1], state

    def generate(self, vocab, prompt: str, length: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 generator: Union[torch.Generator, int, None] = None) -> str:
        """The prompt followed by ``length`` sampled characters.

        The prompt is read first (it sets the state), then each character is drawn from
        ``softmax(logits / temperature)`` and fed back in. ``temperature=0`` is greedy decoding, as is
        ``top_k=1``. ``generator`` (a ``torch.Generator`` or an int seed) makes the text reproducible
        without touching the global random state; ``None`` uses PyTorch's global generator.
        """
        if self.num_directions == 2:
            raise ValueError(
                "a bidirectional model cannot generate text: its backward direction needs the characters "
                "that come after the one being sampled, which do not exist yet. Use a unidirectional model."
            )
        return generate_text(self, self._step, vocab, prompt, length, self.vocab_size, temperature, top_k, generator)


# ---------------------------------------------------------------------------------------------------------
# Recurrent layers over right-padded batches, and a classifier built on them
# ---------------------------------------------------------------------------------------------------------
class PaddedRNN(nn.Module):
    """A recurrent layer run over a right-padded batch so that no direction reads padding before real tokens.

    ``forward(x (B, T, input_size), lengths (B,)) -> (output (B, T, D * H), summary (B, D * H))``:
    ``output`` holds the last layer's states at real positions and zeros at padding; ``summary`` is
    ``[forward state at the last real token; backward state after reading the real tokens backwards]``
    (just the first half when unidirectional). Two ways to compute it, with the same parameters:

    * ``forward_packed`` (used for ``impl="torch"``): ``pack_padded_sequence``, which only torch.nn
      layers accept;
    * ``forward_masked`` (used for ``impl="rnnlib"``): the forward direction runs over the padded batch
      (padding comes after the real tokens, so it cannot affect them); the backward direction runs forward
      over :func:`reverse_padded` inputs. Layer by layer, since each layer's input needs both directions
      of the one below; ``torch.func.functional_call`` runs a one-layer template with the weights of layer
      ``l`` so that the parameters keep their PyTorch names (``rnn.weight_ih_l1_reverse``, ...).
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False, impl: str = "torch", **layer_kwargs):
        super().__init__()
        self.cell, self.hidden_size, self.num_layers, self.impl = cell, hidden_size, num_layers, impl
        self.dropout, self.bidirectional = dropout, bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.rnn = recurrent_layer(cell, input_size, hidden_size, num_layers, dropout=dropout,
                                   bidirectional=bidirectional, impl=impl, **layer_kwargs)
        # One-layer, one-direction templates for forward_masked; kept in a tuple so they are not submodules
        # (their own parameters are never used: functional_call substitutes the real ones).
        self._templates: tuple[nn.Module, ...] = ()
        if bidirectional:
            sizes = [input_size] + ([2 * hidden_size] if num_layers > 1 else [])
            self._templates = tuple(
                recurrent_layer(cell, size, hidden_size, impl=impl, **layer_kwargs) for size in sizes
            )

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_packed(x, lengths) if self.impl == "torch" else self.forward_masked(x, lengths)

    def _summary(self, output: Tensor, lengths: Tensor) -> Tensor:
        rows = torch.arange(output.size(0), device=output.device)
        last = output[rows, lengths.to(output.device) - 1, : self.hidden_size]  # (B, H) forward at t = L - 1
        if not self.bidirectional:
            return last
        return torch.cat([last, output[:, 0, self.hidden_size:]], dim=-1)  # backward direction ends at t = 0

    def forward_packed(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        lengths = check_lengths(lengths, x)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)  # lengths must be on the CPU
        output, _ = self.rnn(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=x.size(1))  # zeros at padding
        return output, self._summary(output, lengths)

    def _run_direction(self, x: Tensor, layer: int, suffix: str) -> Tensor:
        template = self._templates[min(layer, 1)]
        weights = {name: getattr(self.rnn, f"{name[:-1]}{layer}{suffix}") for name, _ in template.named_parameters()}
        output, _ = functional_call(template, weights, (x,))
        return output

    def forward_masked(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        lengths = check_lengths(lengths, x)
        real = (torch.arange(x.size(1))[None, :] < lengths[:, None]).to(x.device)  # (B, T)
        if not self.bidirectional:
            output, _ = self.rnn(x)  # states after the real tokens are garbage, but nothing reads them
        else:
            output = x
            for layer in range(self.num_layers):
                if layer > 0:
                    output = F.dropout(output, self.dropout, self.training)  # as torch.nn's layers do between layers
                forward = self._run_direction(output, layer, "")
                backward = self._run_direction(reverse_padded(output, lengths), layer, "_reverse")
                backward = reverse_padded(backward, lengths)  # back to the original time order
                output = torch.cat([forward, backward], dim=-1)  # (B, T, 2H)
        output = output * real[:, :, None].to(output.dtype)
        return output, self._summary(output, lengths)


class SequenceClassifier(nn.Module):
    """Classify right-padded token sequences: embedding, recurrent layer, linear head on the final state.

    ``forward(x (B, T), lengths (B,)) -> logits (B, num_classes)``; ``x[b, lengths[b]:]`` is padding and
    never influences the result (see :class:`PaddedRNN`). ``dropout`` acts between stacked layers and on
    the final state before the head.
    """

    def __init__(self, vocab_size: int, num_classes: int, hidden_size: int = 128, embedding_dim: int = 32,
                 cell: str = "gru", num_layers: int = 1, bidirectional: bool = False, dropout: float = 0.0,
                 padding_idx: Optional[int] = 0, impl: str = "torch", **layer_kwargs):
        super().__init__()
        self.vocab_size, self.num_classes = vocab_size, num_classes
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        self.encoder = PaddedRNN(cell, embedding_dim, hidden_size, num_layers,
                                 dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional,
                                 impl=impl, **layer_kwargs)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.num_directions * hidden_size, num_classes)

    def features(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The summary the head classifies: ``(B, D * H)``, forward half first."""
        check_token_ids(x, self.vocab_size)
        _, summary = self.encoder(self.embedding(x), lengths)
        return summary

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.drop(self.features(x, lengths)))


# ---------------------------------------------------------------------------------------------------------
# Sequence-to-value regression (forecasting, the adding problem)
# ---------------------------------------------------------------------------------------------------------
class SequenceRegressor(nn.Module):
    """Read a whole window of real-valued inputs, then predict from the last hidden state.

    ``forward(x (B, T, input_size)) -> (B, output_size)``: the recurrent layer runs over all ``T`` steps,
    carrying its hidden state from step to step, and a linear head maps :math:`H_T` to the prediction.
    This is the right way to forecast from a window. (Feeding the ``T`` values as ``T`` independent
    one-step sequences, as the source chapter did, restarts the state at every value, so the model
    never sees more than one value at a time.)
    """

    def __init__(self, input_size: int = 1, hidden_size: int = 32, output_size: int = 1, cell: str = "rnn",
                 num_layers: int = 1, dropout: float = 0.0, impl: str = "torch", **layer_kwargs):
        super().__init__()
        self.input_size, self.output_size, self.cell = input_size, output_size, cell
        self.rnn = recurrent_layer(cell, input_size, hidden_size, num_layers,
                                   dropout=dropout if num_layers > 1 else 0.0, impl=impl, **layer_kwargs)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.size(-1) != self.input_size:
            raise ValueError(
                f"SequenceRegressor expected input of shape (batch, seq_len, {self.input_size}), got "
                f"{tuple(x.shape)}. For a 1-D series use rnnlib.synthetic.sliding_windows, which adds the "
                "feature dimension."
            )
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out[:, -1])  # (B, output_size), from the state after the last step
