"""Text utilities for character-level models: a vocabulary, a train/validation split and mini-batches.

Two ways to cut a long text into mini-batches (d2l calls them random and sequential partitioning):

* **random**: every sequence starts at a random offset; consecutive batches are unrelated, so the
  hidden state must start from zero for each batch.
* **sequential**: the text is split into ``batch_size`` contiguous streams; row ``b`` of batch ``k + 1``
  continues exactly where row ``b`` of batch ``k`` stopped, so the hidden state can be carried from one
  batch to the next (and detached, which is truncated backpropagation through time).

Both return ``(X, Y)`` as ``torch.long`` tensors of shape ``(batch, seq_len)`` with ``Y`` equal to
``X`` shifted left by one character: ``Y[b, t]`` is the character that follows ``X[b, t]``.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch


class Vocab:
    """A mapping between tokens (usually characters) and integer ids.

    Special tokens (for example ``"<pad>"``, ``"<bos>"``, ``"<eos>"``) come first, in the given order,
    so ``"<pad>"`` gets id 0 when listed first. Ordinary tokens follow in sorted order, which makes the
    ids of a text independent of the order its characters first appear in.

    >>> v = Vocab.from_text("hello")
    >>> v.decode(v.encode("hell"))
    'hell'
    """

    def __init__(self, tokens: Iterable[str], specials: Sequence[str] = ()):
        specials = list(specials)
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct, got {specials}")
        ordinary = sorted(set(tokens) - set(specials))
        self.itos: list[str] = specials + ordinary
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        self.specials: tuple[str, ...] = tuple(specials)
        if not self.itos:
            raise ValueError("cannot build a vocabulary from no tokens: the text is empty")

    @classmethod
    def from_text(cls, text: str, specials: Sequence[str] = ()) -> "Vocab":
        """Every distinct character of ``text`` (plus ``specials``)."""
        if not isinstance(text, str):
            raise TypeError(f"expected a str, got {type(text).__name__}")
        if not text and not specials:
            raise ValueError("cannot build a vocabulary from an empty text")
        return cls(text, specials)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __repr__(self) -> str:
        shown = "".join(t for t in self.itos[:20] if len(t) == 1)
        return f"Vocab(size={len(self)}, specials={list(self.specials)}, first={shown!r})"

    def encode(self, text: Iterable[str]) -> torch.Tensor:
        """Ids of each character (or token) of ``text`` as a 1-D ``torch.long`` tensor."""
        ids = []
        for position, token in enumerate(text):
            try:
                ids.append(self.stoi[token])
            except KeyError:
                raise ValueError(
                    f"character {token!r} at position {position} is not in the vocabulary "
                    f"({len(self)} tokens). Remove it, or build the vocabulary from a text that contains it."
                ) from None
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_specials: bool = False) -> str:
        """The string for a sequence of ids; special tokens are dropped when ``skip_specials``."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"expected a 1-D tensor of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < len(self):
                raise ValueError(f"id {i} is outside the vocabulary (0..{len(self) - 1})")
            token = self.itos[i]
            if skip_specials and token in self.specials:
                continue
            out.append(token)
        return "".join(out)


def train_val_split(data, val_fraction: float = 0.1):
    """Split a sequence by position: the first ``1 - val_fraction`` for training, the rest for validation.

    Splitting by position (not at random) keeps validation text unseen as a whole, as a reader would
    meet new text; a random split of overlapping windows would leak training text into validation.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    n = len(data)
    cut = int(round(n * (1.0 - val_fraction)))
    if cut < 2 or n - cut < 2:
        raise ValueError(f"a sequence of length {n} is too short to split with val_fraction={val_fraction}")
    return data[:cut], data[cut:]


def _check_batching(ids: torch.Tensor, batch_size: int, seq_len: int) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"expected a 1-D tensor of token ids (use vocab.encode(text)), got {shape}")
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    if len(ids) < seq_len + 1:
        raise ValueError(
            f"seq_len={seq_len} needs at least {seq_len + 1} tokens (inputs plus the shifted target), "
            f"but the data has {len(ids)}. Use a shorter seq_len or more data."
        )


def random_batches(
    ids: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless mini-batches of sequences that start at random offsets (random partitioning).

    Yields ``(X, Y)`` of shape ``(batch_size, seq_len)`` with ``Y[:, t] == ids[start + t + 1]``.
    """
    _check_batching(ids, batch_size, seq_len)
    n_starts = len(ids) - seq_len
    offsets = torch.arange(seq_len + 1)
    while True:
        starts = torch.randint(0, n_starts, (batch_size,), generator=generator)
        windows = ids[starts[:, None] + offsets]  # (batch, seq_len + 1)
        yield windows[:, :-1], windows[:, 1:]


def sequential_batches(
    ids: torch.Tensor, batch_size: int, seq_len: int, offset: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass of mini-batches whose rows continue from batch to batch (sequential partitioning).

    The ids (after dropping ``offset`` leading tokens) are cut into ``batch_size`` contiguous streams;
    batch ``k`` holds positions ``k * seq_len ... (k + 1) * seq_len - 1`` of every stream, so the hidden
    state at the end of batch ``k`` is the right starting state for batch ``k + 1``. Vary ``offset``
    between epochs so the model does not always see the same cut points.
    """
    _check_batching(ids, batch_size, seq_len)
    if not 0 <= offset < len(ids):
        raise ValueError(f"offset must be in [0, {len(ids) - 1}], got {offset}")
    ids = ids[offset:]
    stream_len = (len(ids) - 1) // batch_size
    n_batches = stream_len // seq_len
    if n_batches < 1:
        raise ValueError(
            f"{len(ids)} tokens cannot fill one batch of {batch_size} streams x {seq_len} steps; "
            "use a smaller batch_size or seq_len."
        )
    used = stream_len * batch_size
    xs = ids[:used].view(batch_size, stream_len)
    ys = ids[1 : used + 1].view(batch_size, stream_len)
    for k in range(n_batches):
        window = slice(k * seq_len, (k + 1) * seq_len)
        yield xs[:, window], ys[:, window]


def num_sequential_batches(n_tokens: int, batch_size: int, seq_len: int) -> int:
    """How many batches :func:`sequential_batches` yields for ``n_tokens`` tokens (offset 0)."""
    return ((n_tokens - 1) // batch_size) // seq_len


def pad_sequences(seqs, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id tensors to a batch: ``(padded (B, T_max), lengths (B,))``.

    Models that read padded batches must ignore positions ``t >= lengths[b]`` (by packing or masking).
    """
    seqs = [torch.as_tensor(s, dtype=torch.long) for s in seqs]
    if not seqs:
        raise ValueError("cannot pad an empty list of sequences")
    for k, s in enumerate(seqs):
        if s.dim() != 1 or len(s) == 0:
            raise ValueError(f"sequence {k} must be a non-empty 1-D tensor of ids, got shape {tuple(s.shape)}")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    padded = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for k, s in enumerate(seqs):
        padded[k, : len(s)] = s
    return padded, lengths
