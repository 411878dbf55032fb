"""The given code of the exercise notebooks: training and evaluation helpers, and a sweep runner.

The exercises ask the learner to write one piece of a model (a cell, a loop, a split, a score); the rest
is given and lives here, so each notebook stays short and every exercise trains and measures the same
way as the chapters (steps counted, not seconds; validation data held out; wall time recorded).

* Forecasting (7.1): :func:`train_regressor`, :func:`predict`.
* The adding problem (7.3): :func:`adding_accuracy`, the fraction of sums predicted within 0.04.
* Dates to ISO format (7.5): :func:`train_seq2seq` (teacher forcing, cross-entropy over the target
  characters), :func:`exact_match` (greedy decoding, whole date right) and :func:`translate`.
* :func:`sweep`: run one configuration after another and collect a table (a pandas DataFrame).
"""
from __future__ import annotations

import itertools
import random
import time
from typing import Callable, Iterable, Mapping, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .synthetic import adding_problem, encode_dates
from .text import Vocab
from .train import History, TrainConfig, fit

__all__ = ["train_regressor", "predict", "adding_accuracy", "train_seq2seq", "exact_match", "translate", "Translation",
           "sweep"]


# ------------------------------------------------------------------------------------------------------
# Regression on windows (exercise 7.1)
# ------------------------------------------------------------------------------------------------------
def train_regressor(model: nn.Module, X: Tensor, y: Tensor, X_val: Tensor, y_val: Tensor, steps: int,
                    batch_size: int = 64, lr: float = 3e-3, clip_norm: Optional[float] = 1.0, eval_every: int = 100,
                    seed: int = 0, **config) -> History:
    """Train ``model(X) -> (N,)`` to predict ``y`` with mean squared error on random mini-batches of windows.

    Validation MSE on all of ``(X_val, y_val)`` every ``eval_every`` steps. Extra keyword arguments go to
    :class:`~rnnlib.train.TrainConfig` (``patience`` for early stopping on the validation loss, ``desc``, ...).
    """
    if len(X) != len(y) or len(X_val) != len(y_val):
        raise ValueError(f"X and y must have the same length, got {len(X)} and {len(y)} (validation: "
                         f"{len(X_val)} and {len(y_val)})")
    device = next(model.parameters()).device
    X_val, y_val = X_val.to(device), y_val.to(device)
    g = torch.Generator().manual_seed(seed)

    def batches():
        while True:
            rows = torch.randint(0, len(X), (batch_size,), generator=g)
            yield X[rows], y[rows]

    def loss_fn(m, batch):
        inputs, targets = batch
        return F.mse_loss(m(inputs), targets)

    cfg = TrainConfig(steps=steps, eval_every=eval_every, clip_norm=clip_norm, **config)
    return fit(model, torch.optim.Adam(model.parameters(), lr=lr), batches(), loss_fn,
               lambda m: float(F.mse_loss(predict(m, X_val), y_val)), cfg)


@torch.no_grad()
def predict(model: nn.Module, X: Tensor, batch_size: int = 2048) -> Tensor:
    """``model(X)`` in eval mode, in chunks, without gradients; the model's training mode is restored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.cat([model(X[k:k + batch_size].to(device)) for k in range(0, len(X), batch_size)])
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------------------
# The adding problem (exercise 7.3)
# ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def adding_accuracy(model: nn.Module, seq_len: int, n: int = 1000, tolerance: float = 0.04, seed: int = 0) -> float:
    """Fraction of ``n`` adding-problem sequences whose sum ``model`` predicts within ``tolerance``.

    The sequences are those :func:`rnnlib.tasks.train_adding` validates on (seed ``10_000 + seed``). A model
    that always predicts 1 (the baseline, MSE 1/6) is within 0.04 of the sum about 8% of the time: the sum
    of two uniform values has a triangular density, 1 at its peak, so ``P(|sum - 1| < 0.04) = 0.08 - 0.04^2``.
    """
    X, y = adding_problem(n, seq_len, seed=10_000 + seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pred = model(X.to(device)).squeeze(-1).cpu()
    model.train(was_training)
    return float(((pred - y).abs() < tolerance).float().mean())


# ------------------------------------------------------------------------------------------------------
# Dates to ISO format (exercise 7.5)
# ------------------------------------------------------------------------------------------------------
def _seq2seq_loss(model: nn.Module, batch: Mapping[str, Tensor], pad_id: int) -> Tensor:
    logits, _ = model(batch["src"], batch["src_lengths"], batch["tgt_in"])  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["tgt_out"].reshape(-1), ignore_index=pad_id)


def train_seq2seq(model: nn.Module, train_pairs: Sequence[tuple[str, str]], val_pairs: Sequence[tuple[str, str]],
                  src_vocab: Vocab, tgt_vocab: Vocab, steps: int, batch_size: int = 64, lr: float = 3e-3,
                  clip_norm: Optional[float] = 1.0, eval_every: int = 100, seed: int = 0, **config) -> History:
    """Train a :class:`rnnlib.attention.Seq2Seq` with teacher forcing on ``(source, target)`` string pairs.

    Loss: cross-entropy of every target character (``<eos>`` included), in nats per character; validation
    loss on all of ``val_pairs``. Batches are drawn at random from ``train_pairs``.
    """
    device = next(model.parameters()).device
    pad_id = tgt_vocab.stoi["<pad>"]
    val = {k: v.to(device) for k, v in encode_dates(val_pairs, src_vocab, tgt_vocab).items()}
    rng = random.Random(seed)

    def batches():
        while True:
            yield encode_dates(rng.sample(list(train_pairs), batch_size), src_vocab, tgt_vocab)

    cfg = TrainConfig(steps=steps, eval_every=eval_every, clip_norm=clip_norm, **config)
    return fit(model, torch.optim.Adam(model.parameters(), lr=lr), batches(),
               lambda m, b: _seq2seq_loss(m, b, pad_id), lambda m: float(_seq2seq_loss(m, val, pad_id)), cfg)


class Translation(NamedTuple):
    """One greedy translation: the output string, the tokens emitted (``<eos>`` included when it was
    produced) and the attention weights, one row per emitted token and one column per source character
    (None for a model without attention)."""

    text: str
    tokens: list
    weights: Optional[Tensor]


@torch.no_grad()
def _decode(model, pairs, src_vocab: Vocab, tgt_vocab: Vocab, max_len: int):
    """Greedy decoding of every source: (emitted tokens per row, up to and including <eos>; weights or None)."""
    device = next(model.parameters()).device
    batch = encode_dates(pairs, src_vocab, tgt_vocab)
    was_training = model.training
    model.eval()
    ids, weights = model.greedy_decode(batch["src"].to(device), batch["src_lengths"].to(device), max_len,
                                       tgt_vocab.stoi["<bos>"], tgt_vocab.stoi["<eos>"])
    model.train(was_training)
    eos = tgt_vocab.stoi["<eos>"]
    tokens = []
    for row in ids.tolist():
        row = row[: row.index(eos) + 1] if eos in row else row
        tokens.append([tgt_vocab.itos[i] for i in row])
    return tokens, weights


def _text(tokens: list) -> str:
    """The characters of an output, specials (<eos>, <pad>, <bos>) left out."""
    return "".join(t for t in tokens if not (t.startswith("<") and t.endswith(">")))


def exact_match(model: nn.Module, pairs: Sequence[tuple[str, str]], src_vocab: Vocab, tgt_vocab: Vocab,
                batch_size: int = 500) -> float:
    """Fraction of ``pairs`` whose whole target string greedy decoding gets exactly right (and then stops)."""
    right = 0
    for k in range(0, len(pairs), batch_size):
        chunk = pairs[k:k + batch_size]
        tokens, _ = _decode(model, chunk, src_vocab, tgt_vocab, max_len=max(len(t) for _, t in chunk) + 1)
        right += sum(out == list(target) + ["<eos>"] for out, (_, target) in zip(tokens, chunk))
    return right / len(pairs)


def translate(model: nn.Module, source: str, src_vocab: Vocab, tgt_vocab: Vocab, max_len: int = 12) -> Translation:
    """Greedy translation of one string, with the attention weights for a heatmap (see :class:`Translation`)."""
    tokens, weights = _decode(model, [(source, "0")], src_vocab, tgt_vocab, max_len)
    tokens = tokens[0]
    rows = None if weights is None else weights[0, : len(tokens), : len(source)].cpu()
    return Translation(_text(tokens), tokens, rows)


# ------------------------------------------------------------------------------------------------------
# Sweeps
# ------------------------------------------------------------------------------------------------------
def sweep(run: Callable[..., Mapping], grid: Mapping[str, Iterable] | None = None,
          configs: Iterable[Mapping] | None = None, desc: str = "sweep"):
    """Call ``run(**config)`` for each configuration and return one table row per run (a pandas DataFrame).

    Give either ``grid`` (every combination of the listed values) or ``configs`` (a list of dicts). ``run``
    returns a dict of measured values; each row holds the configuration, those values and ``seconds``, the
    wall time of the run.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if (grid is None) == (configs is None):
        raise ValueError("give exactly one of grid= (values to combine) or configs= (a list of dicts)")
    if grid is not None:
        keys = list(grid)
        configs = [dict(zip(keys, values)) for values in itertools.product(*(list(grid[k]) for k in keys))]
    configs = [dict(c) for c in configs]
    rows = []
    for config in tqdm(configs, desc=desc):
        start = time.perf_counter()
        measured = dict(run(**config))
        rows.append({**config, **measured, "seconds": round(time.perf_counter() - start, 1)})
    return pd.DataFrame(rows)
