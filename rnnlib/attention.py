r"""Attention for recurrent models: scores, masked softmax weights and the context vector, and two models.

Notation, for one query (the modules take a batch, and one or several queries per example):

* query :math:`s \in \mathbb{R}^{d_q}`: the decoder state (for a language model, the hidden state at t);
* keys = values :math:`h_1, \dots, h_S \in \mathbb{R}^{d_k}`: the encoder states (for a language model,
  the hidden states at positions :math:`\le t`); values may differ from keys, with size :math:`d_v`;
* scores :math:`e_j = \mathrm{score}(s, h_j)`;
* weights :math:`\alpha_j = \exp(e_j) / \sum_{k \in M} \exp(e_k)` for unmasked positions
  :math:`j \in M`, and :math:`\alpha_j = 0` exactly for masked ones;
* context :math:`c = \sum_j \alpha_j h_j`.

Two scores:

* additive (Bahdanau et al., 2015): :math:`e_j = v^\top \tanh(W_q s + W_k h_j)`, with
  :math:`W_q \in \mathbb{R}^{a \times d_q}`, :math:`W_k \in \mathbb{R}^{a \times d_k}`,
  :math:`v \in \mathbb{R}^a` (no biases, as in the equation);
* scaled dot product (Luong et al., 2015, "dot" and "general" scores; the scaling is from Vaswani et al.,
  2017): :math:`e_j = (W_q s)^\top h_j / \sqrt{d_k}`. :math:`W_q` is a learned :math:`d_k \times d_q`
  projection when the sizes differ (Luong's "general") and the identity when :math:`d_q = d_k` (Luong's
  "dot"). Dividing by :math:`\sqrt{d_k}` keeps the scores' spread independent of the size, so the softmax
  does not saturate as :math:`d_k` grows.

A *causal* mask lets position :math:`t` attend only to positions :math:`j \le t`: a language model that
attended to :math:`j > t` would read the characters it is asked to predict.

References: Bahdanau, Cho & Bengio (2015) Neural machine translation by jointly learning to align and
translate; Luong, Pham & Manning (2015) Effective approaches to attention-based neural machine translation;
Vaswani et al. (2017) Attention is all you need; for ``Seq2Seq``: Sutskever, Vinyals & Le (2014) Sequence to
sequence learning with neural networks; Bengio, Vinyals, Jaitly & Shazeer (2015) Scheduled sampling for
sequence prediction with recurrent neural networks.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .models import (PaddedRNN, State, check_lengths, check_token_ids, embed_tokens, generate_text, hidden_of,
                     recurrent_cell, recurrent_layer, zero_state)

ATTENTIONS = ("additive", "dot")


def masked_softmax(scores: Tensor, mask: Optional[Tensor], dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to positions where ``mask`` is True.

    ``mask`` is a bool tensor broadcastable to ``scores`` (True = may attend) or None (attend to all).
    The weights are exactly 0 at masked positions. A row with no unmasked position at all gets weights
    that are all 0 (not NaN), so its context is the zero vector and its gradients are 0, not NaN.
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = may attend), got {mask.dtype}")
    # The most negative finite number, not -inf: a fully masked row then gives a finite softmax that the
    # second masked_fill zeroes, instead of 0/0 = NaN.
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim).masked_fill(~mask, 0.0)


def causal_mask(T: int, device=None) -> Tensor:
    """``(T, T)`` bool mask, True on and below the diagonal: query ``t`` may attend to keys ``j <= t``."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


class _Attention(nn.Module):
    """Shared forward of the attention modules; subclasses define ``score``.

    ``forward(query, keys, values=None, mask=None) -> (context, weights)``:

    * ``query`` ``(B, Dq)`` (one query per example) or ``(B, Tq, Dq)``;
    * ``keys`` ``(B, S, Dk)``; ``values`` ``(B, S, Dv)``, the keys when None;
    * ``mask`` bool, True = may attend: ``(B, S)`` or, for a 3-D query, ``(B, Tq, S)``;
    * returns ``context`` ``(B, Dv)`` / ``(B, Tq, Dv)`` and ``weights`` ``(B, S)`` / ``(B, Tq, S)``.
    """

    query_size: int
    key_size: int

    def score(self, query: Tensor, keys: Tensor) -> Tensor:  # (B, Tq, Dq), (B, S, Dk) -> (B, Tq, S)
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, values: Optional[Tensor] = None,
                mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        q, k = self.query_size, self.key_size
        if query.dim() not in (2, 3) or query.size(-1) != q:
            raise ValueError(
                f"expected query of shape (batch, {q}) or (batch, num_queries, {q}), got {tuple(query.shape)}"
            )
        batch = query.size(0)
        if keys.dim() != 3 or keys.size(0) != batch or keys.size(-1) != k:
            raise ValueError(f"expected keys of shape ({batch}, src_len, {k}), got {tuple(keys.shape)}")
        values = keys if values is None else values
        if values.dim() != 3 or values.shape[:2] != keys.shape[:2]:
            raise ValueError(
                f"expected values of shape {tuple(keys.shape[:2])} + (value_size,), got {tuple(values.shape)}"
            )
        single = query.dim() == 2
        query = query[:, None] if single else query  # (B, Tq, Dq)
        if mask is not None:
            allowed = [(batch, keys.size(1))] + ([] if single else [(batch, query.size(1), keys.size(1))])
            if tuple(mask.shape) not in allowed:
                raise ValueError(f"expected mask of shape {' or '.join(map(str, allowed))}, got {tuple(mask.shape)}")
            mask = mask[:, None] if mask.dim() == 2 else mask  # (B, 1 or Tq, S)
        weights = masked_softmax(self.score(query, keys), mask)  # (B, Tq, S)
        context = weights @ values  # (B, Tq, Dv)
        if single:
            return context[:, 0], weights[:, 0]
        return context, weights


class AdditiveAttention(_Attention):
    r"""Additive (Bahdanau) attention: :math:`e_j = v^\top \tanh(W_q s + W_k h_j)`. Shapes: see ``_Attention``.

    Memory grows as ``B * Tq * S * attn_size`` (the tanh is taken for every query-key pair).
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int):
        super().__init__()
        self.query_size, self.key_size, self.attn_size = query_size, key_size, attn_size
        self.W_q = nn.Linear(query_size, attn_size, bias=False)
        self.W_k = nn.Linear(key_size, attn_size, bias=False)
        self.v = nn.Linear(attn_size, 1, bias=False)

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        features = torch.tanh(self.W_q(query)[:, :, None, :] + self.W_k(keys)[:, None, :, :])  # (B, Tq, S, A)
        return self.v(features).squeeze(-1)  # (B, Tq, S)


class DotProductAttention(_Attention):
    r"""(Scaled) dot-product attention: :math:`e_j = (W_q s)^\top h_j / \sqrt{d_k}`. Shapes: see ``_Attention``.

    ``W_q`` is a learned projection (``self.W_q``, no bias) when ``query_size != key_size`` and the
    identity (``self.W_q is None``, no parameters) when they are equal. ``scaled=False`` drops the
    :math:`1/\sqrt{d_k}`.
    """

    def __init__(self, query_size: int, key_size: int, scaled: bool = True):
        super().__init__()
        self.query_size, self.key_size, self.scaled = query_size, key_size, scaled
        self.W_q = nn.Linear(query_size, key_size, bias=False) if query_size != key_size else None

    def score(self, query: Tensor, keys: Tensor) -> Tensor:
        q = query if self.W_q is None else self.W_q(query)  # (B, Tq, Dk)
        scores = q @ keys.transpose(1, 2)  # (B, Tq, S)
        return scores / math.sqrt(self.key_size) if self.scaled else scores


def make_attention(kind: Optional[str], query_size: int, key_size: int) -> Optional[_Attention]:
    """``"additive"`` (attention size = ``query_size``), ``"dot"`` (scaled), or None for no attention."""
    if kind is None:
        return None
    if kind == "additive":
        return AdditiveAttention(query_size, key_size, query_size)
    if kind == "dot":
        return DotProductAttention(query_size, key_size, scaled=True)
    raise ValueError(f"attention must be one of {ATTENTIONS} or None, got {kind!r}")


class Seq2Seq(nn.Module):
    r"""An RNN encoder-decoder with (or without) attention, trained with teacher forcing (by default).

    Encoder: a bidirectional layer over the real source tokens (padding never read first, see
    ``rnnlib.models.PaddedRNN``), giving :math:`h_j = [\overrightarrow{h}_j; \overleftarrow{h}_j]` of size
    2H and the summary :math:`m = [\overrightarrow{h}_{L-1}; \overleftarrow{h}_0]`. Decoder, a cell with
    state :math:`s_t` of size H:

    .. math::
        s_0 = \tanh(W_{init} m), \quad
        s_t = \mathrm{cell}([E y_{t-1}; c_{t-1}], s_{t-1}), \quad
        \mathrm{logits}_t = W_{out} [s_t; c_t] + b_{out},

    with :math:`c_t = \mathrm{attention}(s_t, h, \mathrm{mask})` over the real source positions, or
    :math:`c_t = m` at every step when ``attention=None``: the model without attention gets the same
    fixed-size summary at every step, so a comparison isolates what attention adds (access to every
    :math:`h_j`). For an LSTM decoder the cell state starts at zero.

    Shapes: ``src`` ``(B, S)`` right-padded, ``src_lengths`` ``(B,)``, ``tgt_in`` ``(B, T)`` (the target
    shifted right, starting with BOS); ``forward`` returns ``logits`` ``(B, T, V_tgt)`` and ``weights``
    ``(B, T, S)`` (None without attention): ``weights[b, t, j]`` is how much output step t looked at
    source position j, the heatmap the chapter plots.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, hidden_size: int = 128, embedding_dim: int = 32,
                 attention: Optional[str] = "additive", cell: str = "gru", padding_idx: Optional[int] = 0,
                 impl: str = "torch"):
        super().__init__()
        H = hidden_size
        self.src_vocab_size, self.tgt_vocab_size, self.hidden_size, self.cell = src_vocab_size, tgt_vocab_size, H, cell
        self.padding_idx = padding_idx
        self.src_embedding = nn.Embedding(src_vocab_size, embedding_dim, padding_idx=padding_idx)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, embedding_dim, padding_idx=padding_idx)
        self.encoder = PaddedRNN(cell, embedding_dim, H, bidirectional=True, impl=impl)
        self.W_init = nn.Linear(2 * H, H)
        self.decoder = recurrent_cell(cell, embedding_dim + 2 * H, H, impl=impl)
        self.attention = make_attention(attention, H, 2 * H)
        self.head = nn.Linear(H + 2 * H, tgt_vocab_size)

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(memory (B, S, 2H), summary m (B, 2H), mask (B, S) True at real source tokens)``."""
        check_token_ids(src, self.src_vocab_size, "src")
        lengths = check_lengths(src_lengths, src)
        memory, summary = self.encoder(self.src_embedding(src), lengths)
        mask = (torch.arange(src.size(1))[None, :] < lengths[:, None]).to(src.device)
        return memory, summary, mask

    def _context(self, s: Tensor, memory: Tensor, summary: Tensor, mask: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        if self.attention is None:
            return summary, None
        return self.attention(s, memory, mask=mask)  # (B, 2H), (B, S)

    def _start(self, memory: Tensor, summary: Tensor, mask: Tensor) -> tuple[State, Tensor]:
        s = torch.tanh(self.W_init(summary))  # (B, H)
        state = (s, torch.zeros_like(s)) if self.cell == "lstm" else s
        return state, self._context(s, memory, summary, mask)[0]

    def _step(self, y_prev: Tensor, state: State, c_prev: Tensor, memory: Tensor, summary: Tensor,
              mask: Tensor) -> tuple[Tensor, State, Tensor, Optional[Tensor]]:
        state = self.decoder(torch.cat([self.tgt_embedding(y_prev), c_prev], dim=-1), state)
        s = hidden_of(state)  # (B, H)
        c, weights = self._context(s, memory, summary, mask)
        return self.head(torch.cat([s, c], dim=-1)), state, c, weights

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor,
                teacher_forcing: float = 1.0) -> tuple[Tensor, Optional[Tensor]]:
        """Logits of every target position. Step 0 reads ``tgt_in[:, 0]`` (BOS); step t > 0 reads the true
        previous token ``tgt_in[:, t]`` with probability ``teacher_forcing`` and otherwise the model's own
        most likely token of step t - 1 (an arg max: no gradient flows through the choice). 1.0 is teacher
        forcing, 0.0 is free running (the inputs of :meth:`greedy_decode`), values in between are scheduled
        sampling (Bengio et al., 2015), drawn per example and step from PyTorch's global generator."""
        check_token_ids(tgt_in, self.tgt_vocab_size, "tgt_in")
        if tgt_in.size(0) != src.size(0):
            raise ValueError(f"src and tgt_in must have the same batch size, got {src.size(0)} and {tgt_in.size(0)}")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be a probability in [0, 1], got {teacher_forcing}")
        memory, summary, mask = self.encode(src, src_lengths)
        state, c = self._start(memory, summary, mask)
        logits, weights = [], []
        y = tgt_in[:, 0]  # (B,)
        for t in range(tgt_in.size(1)):
            out, state, c, w = self._step(y, state, c, memory, summary, mask)
            logits.append(out)
            weights.append(w)
            if t + 1 < tgt_in.size(1):
                y = tgt_in[:, t + 1]
                if teacher_forcing < 1.0:
                    own = out.detach().argmax(-1)  # (B,)
                    y = own if teacher_forcing == 0.0 else torch.where(
                        torch.rand(y.shape, device=y.device) < teacher_forcing, y, own)
        return torch.stack(logits, 1), (None if self.attention is None else torch.stack(weights, 1))

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, src_lengths: Tensor, max_len: int, bos_id: int,
                      eos_id: int) -> tuple[Tensor, Optional[Tensor]]:
        """Feed back the most likely token until every row has emitted ``eos_id`` or ``max_len`` steps.

        Returns ``tokens`` ``(B, n)`` with ``n <= max_len`` (BOS not included, EOS included; after a row's
        EOS its tokens are ``padding_idx`` and its attention weights 0) and ``weights`` ``(B, n, S)`` or None.
        """
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
            if not 0 <= value < self.tgt_vocab_size:
                raise ValueError(f"{name} must be in [0, {self.tgt_vocab_size - 1}], got {value}")
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        memory, summary, mask = self.encode(src, src_lengths)
        state, c = self._start(memory, summary, mask)
        y = torch.full((src.size(0),), bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros_like(y, dtype=torch.bool)
        tokens, weights = [], []
        for _ in range(max_len):
            out, state, c, w = self._step(y, state, c, memory, summary, mask)
            y = out.argmax(-1)
            tokens.append(y.masked_fill(done, self.padding_idx if self.padding_idx is not None else eos_id))
            if w is not None:
                weights.append(w.masked_fill(done[:, None], 0.0))
            done = done | (y == eos_id)
            if bool(done.all()):
                break
        return torch.stack(tokens, 1), (torch.stack(weights, 1) if weights else None)


class CausalAttentionLM(nn.Module):
    r"""A recurrent language model whose position t also attends over the hidden states at positions <= t.

    .. math::
        h_t = \mathrm{layer}(x_t, h_{t-1}), \quad
        c_t = \sum_{j \le t} \alpha_{tj} h_j, \quad
        \mathrm{logits}_t = W [h_t; c_t] + b.

    ``forward(x (B, T), state=None) -> (logits (B, T, V), state, weights (B, T, T))``; the attention
    covers the T positions of this call (a carried ``state`` brings the earlier text in through the
    recurrence only). :meth:`generate` attends over every hidden state produced so far (or the last
    ``window`` of them), reading each character once: see :meth:`read` and :class:`KVCache`.

    ``causal=False`` IS THE WRONG WAY, kept only to demonstrate the source chapter's mistake: position t
    then attends over the whole sequence, future included, so during training the logits for character
    t + 1 can read that very character; the loss falls for the wrong reason and sampling (where the future
    does not exist) cannot reproduce it. Never train a language model with ``causal=False``.
    """

    def __init__(self, vocab_size: int, hidden_size: int = 256, embedding_dim: Optional[int] = None,
                 cell: str = "lstm", attention: str = "dot", causal: bool = True, impl: str = "torch",
                 num_layers: int = 1, **layer_kwargs):
        super().__init__()
        if layer_kwargs.get("bidirectional", False):
            raise ValueError("a language model must be unidirectional: a backward direction reads the future")
        if attention is None:
            raise ValueError(f"attention must be one of {ATTENTIONS}; for no attention use rnnlib.models.CharLM")
        self.vocab_size, self.hidden_size, self.num_layers, self.cell = vocab_size, hidden_size, num_layers, cell
        self.causal = causal
        self.embedding = nn.Embedding(vocab_size, embedding_dim) if embedding_dim else None
        self.rnn = recurrent_layer(cell, embedding_dim or vocab_size, hidden_size, num_layers, impl=impl,
                                   **layer_kwargs)
        self.attention = make_attention(attention, hidden_size, hidden_size)
        self.head = nn.Linear(2 * hidden_size, vocab_size)

    def init_state(self, batch_size: int, device=None) -> State:
        """The zero state for ``batch_size`` sequences (what ``state=None`` means)."""
        return zero_state(self.cell, self.num_layers, batch_size, self.hidden_size,
                          device=device or self.head.weight.device, dtype=self.head.weight.dtype)

    def forward(self, x: Tensor, state: Optional[State] = None) -> tuple[Tensor, State, Tensor]:
        check_token_ids(x, self.vocab_size)
        inputs = embed_tokens(x, self.embedding, self.vocab_size, self.head.weight.dtype)  # (B, T, D)
        h, state = self.rnn(inputs, state)  # (B, T, H)
        mask = causal_mask(x.size(1), device=x.device).expand(x.size(0), -1, -1) if self.causal else None  # (B, T, T)
        c, weights = self.attention(h, h, mask=mask)  # (B, T, H), (B, T, T)
        return self.head(torch.cat([h, c], dim=-1)), state, weights

    class KVCache:
        r"""What generation keeps between characters for B sequences: a key-value (KV) cache.

        * ``state``: the recurrent layer's state after the last character read;
        * ``values`` ``(B, C, H)``: the hidden states :math:`h_j` of the positions read (the attention's values);
        * ``keys`` ``(B, C, K)``: what a query is scored against, computed once per position: :math:`h_j`
          itself for dot-product attention (then ``keys is values``, K = H, stored once), :math:`W_k h_j`
          for additive attention (K = its attention size).

        ``C`` rows are allocated at a time (growing by doubling as needed); ``length`` positions have been
        read. With a ``window`` W, C = W and position j lives in row j mod W: older positions are
        overwritten, so memory stays W rows whatever the length. ``nbytes`` is the memory of keys and values.
        """

        def __init__(self, values: Tensor, keys: Optional[Tensor], window: Optional[int]):
            self.state: Optional[State] = None
            self.values, self._keys, self.window, self.length = values, keys, window, 0

        @property
        def keys(self) -> Tensor:
            return self.values if self._keys is None else self._keys

        @property
        def nbytes(self) -> int:
            held = [self.values] + ([] if self._keys is None else [self._keys])
            return sum(t.numel() * t.element_size() for t in held)

        def append(self, values: Tensor, keys: Optional[Tensor]) -> None:
            """Store the rows of ``n`` new positions: ``values`` ``(B, n, H)``, ``keys`` ``(B, n, K)`` or None."""
            n, capacity = values.size(1), self.values.size(1)
            if self.window is None and self.length + n > capacity:  # grow: amortized O(1) per position
                grown = max(2 * capacity, self.length + n)
                self.values = torch.cat([self.values, self.values.new_empty(
                    self.values.size(0), grown - capacity, self.values.size(2))], 1)
                if self._keys is not None:
                    self._keys = torch.cat([self._keys, self._keys.new_empty(
                        self._keys.size(0), grown - capacity, self._keys.size(2))], 1)
                capacity = grown
            kept = min(n, capacity)  # with a window, only the last W of a long prompt matter
            rows = torch.arange(self.length + n - kept, self.length + n, device=values.device) % capacity
            self.values[:, rows] = values[:, n - kept:]
            if self._keys is not None:
                self._keys[:, rows] = keys[:, n - kept:]
            self.length += n

        def filled(self) -> tuple[Tensor, Tensor]:
            """``(keys (B, S, K), values (B, S, H))`` of the S = min(length, C) positions held."""
            S = min(self.length, self.values.size(1))
            return self.keys[:, :S], self.values[:, :S]

    def _key(self, h: Tensor) -> Optional[Tensor]:
        """What the cache keeps as keys for hidden states ``h`` ``(B, n, H)``: W_k h for additive attention,
        None (the values themselves) for dot-product attention."""
        return self.attention.W_k(h) if isinstance(self.attention, AdditiveAttention) else None

    def _attend(self, h: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Context ``(B, 1, H)`` of the query ``h`` ``(B, 1, H)`` over every cached position (all are in its
        past, so no mask): the same scores as the attention module, with additive keys already projected."""
        if isinstance(self.attention, AdditiveAttention):
            att = self.attention
            scores = att.v(torch.tanh(att.W_q(h)[:, :, None, :] + keys[:, None, :, :])).squeeze(-1)  # (B, 1, S)
        else:
            scores = self.attention.score(h, keys)  # (B, 1, S)
        return torch.softmax(scores, dim=-1) @ values  # (B, 1, H)

    def read(self, x: Tensor, cache: Optional["CausalAttentionLM.KVCache"] = None, window: Optional[int] = None,
             capacity: Optional[int] = None) -> tuple[Tensor, "CausalAttentionLM.KVCache"]:
        """Read the tokens ``x`` ``(B, n)`` after what ``cache`` holds; return the logits of the last position
        ``(B, V)`` and the cache, which now holds these n positions too.

        The recurrent layer reads the n tokens once, from the cached state; only the last position attends
        (over at most ``window`` cached positions). A new cache (``cache=None``) allocates ``capacity`` rows
        (default n). Its cost: O(n) layer steps plus one attention over the positions held, so reading one
        character after a context of length S costs one layer step and O(S) attention, not forward's
        S x S. Call it under ``torch.no_grad()``; the cache is for generation, not training.
        """
        check_token_ids(x, self.vocab_size)
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be a positive int (how many positions to attend over) or None, got {window!r}")
        inputs = embed_tokens(x, self.embedding, self.vocab_size, self.head.weight.dtype)  # (B, n, D)
        h, state = self.rnn(inputs, None if cache is None else cache.state)  # (B, n, H)
        keys = self._key(h)  # (B, n, K), or None: the values are the keys
        if cache is None:
            rows = window if window is not None else max(capacity or 0, x.size(1))
            cache = self.KVCache(h.new_empty(x.size(0), rows, h.size(2)),
                                 None if keys is None else keys.new_empty(x.size(0), rows, keys.size(2)), window)
        elif cache.values.size(0) != x.size(0):
            raise ValueError(f"the cache holds {cache.values.size(0)} sequences, x has {x.size(0)}")
        cache.append(h, keys)
        cache.state = state
        c = self._attend(h[:, -1:], *cache.filled())  # (B, 1, H)
        return self.head(torch.cat([h[:, -1:], c], dim=-1))[:, 0], cache  # (B, V)

    def generate(self, vocab, prompt: str, length: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 generator: Union[torch.Generator, int, None] = None, window: Optional[int] = None) -> str:
        """Like :meth:`rnnlib.models.CharLM.generate`, attending over the hidden states produced so far.

        Cost per generated character: one step of the recurrent layer plus attention over the cached keys
        (:class:`KVCache`), so time and memory grow linearly with the context, where rereading the whole
        text with :meth:`forward` would cost a T x T attention every character. The prompt is read once.
        ``window`` (a number of positions) bounds both further: each character attends over the last
        ``window`` positions only, and the cache holds only those; the text then differs from what
        ``forward`` would give once the context is longer than the window. Without a window the cache holds
        ``len(prompt) + length`` positions: that many times ``hidden_size`` numbers (twice that, about, for
        additive attention, whose projected keys are cached too).
        """
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be a positive int (how many positions to attend over) or None, got {window!r}")

        def step(x: Tensor, cache):
            return self.read(x, cache, window=window, capacity=x.size(1) + length)

        return generate_text(self, step, vocab, prompt, length, self.vocab_size, temperature, top_k, generator)
