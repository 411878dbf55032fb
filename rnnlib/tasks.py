"""The course's recurring experiments, each a few lines on top of :func:`rnnlib.train.fit`.

Several chapters train the same kinds of model on the same tasks and compare them; these helpers make
sure they do it the same way (same split, batching, budget and metric), so that numbers from one
chapter can be set beside numbers from another:

* :func:`train_char_lm`: next-character prediction on a text (tiny Shakespeare), validation loss in nats/char.
* :func:`train_adding`: the adding problem; validation MSE against the baseline 1/6, and
  :data:`SOLVED_MSE`, the one threshold below which the course calls a run "solved".
* :class:`SurnameData` and :func:`train_classifier`: surnames by language; validation accuracy.

Budgets are counted in optimizer steps, not seconds, so a seed reproduces a run exactly on any machine;
the returned :class:`~rnnlib.train.History` records the wall time, so speed is still measured.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .synthetic import adding_problem
from .text import Vocab, pad_sequences, random_batches
from .train import History, LMLoss, TrainConfig, evaluate_lm, fit

#: A run of the adding problem counts as *solved* when its validation MSE is below this: 6% of the
#: baseline 1/6 (always predicting the mean). Every chapter that counts solved runs uses this constant.
SOLVED_MSE = 0.01


def train_char_lm(
    model: nn.Module,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    seq_len: int = 100,
    lr: float = 2e-3,
    clip_norm: float | None = 1.0,
    eval_every: int = 100,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    history: History | None = None,
    **config,
) -> History:
    """Train a model called as ``logits, state = model(X, state)`` on random windows of ``train_ids``.

    Adam (``lr``) unless an ``optimizer`` is given; gradient norm clipped to ``clip_norm``; validation
    loss (nats per character) on all of ``val_ids`` every ``eval_every`` steps. Extra keyword arguments
    go to :class:`~rnnlib.train.TrainConfig` (``desc``, ``live_plot``, ``patience``, ...); pass the
    ``history`` of an earlier call to continue it (note: the batch stream restarts from ``seed``).
    """
    device = next(model.parameters()).device
    batches = random_batches(train_ids, batch_size, seq_len, generator=torch.Generator().manual_seed(seed))
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    cfg = TrainConfig(steps=steps, eval_every=eval_every, clip_norm=clip_norm, **config)
    return fit(model, optimizer, batches, LMLoss(), lambda m: evaluate_lm(m, val_ids.to(device)), cfg, scheduler,
               history)


def train_adding(
    model: nn.Module,
    seq_len: int,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    clip_norm: float | None = 1.0,
    n_val: int = 1000,
    eval_every: int = 100,
    seed: int = 0,
    stop_below: float | None = None,
    **config,
) -> History:
    """Train a sequence-to-value model (e.g. :class:`~rnnlib.models.SequenceRegressor` with
    ``input_size=2``) on fresh adding-problem batches; validation MSE on ``n_val`` fixed sequences.

    A model that has not learnt to remember the two marked values sits at MSE 1/6 (predicting 1 always).
    ``stop_below``: stop at the first evaluation whose validation MSE is below this (e.g.
    :data:`SOLVED_MSE`, to measure how many steps a run needs); up to that point the run is the same,
    step for step, as one without it.
    """
    if stop_below is not None and not eval_every:
        raise ValueError("stop_below needs evaluations to check against: set eval_every")
    device = next(model.parameters()).device
    X_val, y_val = adding_problem(n_val, seq_len, seed=10_000 + seed)
    X_val, y_val = X_val.to(device), y_val.to(device)
    g = torch.Generator().manual_seed(seed)

    def batch_stream():
        while True:
            yield adding_problem(batch_size, seq_len, generator=g)

    def loss_fn(m, batch):
        X, y = batch
        return F.mse_loss(m(X).squeeze(-1), y)

    def val_fn(m):
        return float(F.mse_loss(m(X_val).squeeze(-1), y_val))

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = batch_stream()
    if stop_below is None:
        cfg = TrainConfig(steps=steps, eval_every=eval_every, clip_norm=clip_norm, **config)
        return fit(model, optimizer, batches, loss_fn, val_fn, cfg)
    # One call of fit per evaluation interval, continuing the same optimizer, batch stream and history,
    # so the run is identical to a single call until it stops. One progress bar for the whole run.
    from tqdm.auto import tqdm

    show = config.pop("progress", True)
    bar = tqdm(total=steps, desc=config.get("desc", "training"), disable=not show, mininterval=1.0)
    history = History()
    while history.steps_done < steps and not (history.val_loss and history.val_loss[-1] < stop_below):
        chunk = min(eval_every - history.steps_done % eval_every, steps - history.steps_done)
        cfg = TrainConfig(steps=chunk, eval_every=eval_every, clip_norm=clip_norm, progress=False, **config)
        history = fit(model, optimizer, batches, loss_fn, val_fn, cfg, history=history)
        bar.update(chunk)
        bar.set_postfix(val=f"{history.val_loss[-1]:.4f}")
        if history.interrupted:
            break
    bar.close()
    return history


@dataclass
class SurnameData:
    """Surnames split per language into training and validation, encoded for a classifier.

    ``vocab`` has ``"<pad>"`` at id 0; ``languages`` are sorted, and a label is an index into them.
    """

    vocab: Vocab
    languages: list[str]
    train: list[tuple[str, str]]
    val: list[tuple[str, str]]

    @classmethod
    def split(cls, pairs: list[tuple[str, str]], val_fraction: float = 0.2, seed: int = 0) -> "SurnameData":
        """Hold out ``val_fraction`` of each language (stratified), so rare languages appear in both parts."""
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
        rng = random.Random(seed)
        languages = sorted({lang for _, lang in pairs})
        train, val = [], []
        for lang in languages:
            group = [p for p in pairs if p[1] == lang]
            rng.shuffle(group)
            k = max(1, round(len(group) * val_fraction))
            val += group[:k]
            train += group[k:]
        rng.shuffle(train)
        vocab = Vocab("".join(name for name, _ in pairs), specials=("<pad>",))
        return cls(vocab, languages, train, val)

    def encode(self, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x (B, T) right-padded ids, lengths (B,), labels (B,))``."""
        x, lengths = pad_sequences([self.vocab.encode(name) for name, _ in pairs], pad_id=0)
        labels = torch.tensor([self.languages.index(lang) for _, lang in pairs], dtype=torch.long)
        return x, lengths, labels

    def batches(self, batch_size: int = 64, seed: int = 0):
        """An endless stream of shuffled training batches ``(x, lengths, labels)``."""
        g = random.Random(seed)
        order = list(range(len(self.train)))
        while True:
            g.shuffle(order)
            for k in range(0, len(order) - batch_size + 1, batch_size):
                yield self.encode([self.train[i] for i in order[k : k + batch_size]])


@torch.no_grad()
def classifier_predictions(model: nn.Module, data: SurnameData, pairs=None, batch_size: int = 512) -> torch.Tensor:
    """Predicted label of every pair (the validation set by default), in order."""
    pairs = data.val if pairs is None else pairs
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for k in range(0, len(pairs), batch_size):
        x, lengths, _ = data.encode(pairs[k : k + batch_size])
        out.append(model(x.to(device), lengths).argmax(-1).cpu())
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, data: SurnameData, pairs=None) -> float:
    """Fraction of ``pairs`` (validation by default) whose language is predicted correctly."""
    pairs = data.val if pairs is None else pairs
    labels = torch.tensor([data.languages.index(lang) for _, lang in pairs])
    return float((classifier_predictions(model, data, pairs) == labels).float().mean())


def confusion_matrix(model: nn.Module, data: SurnameData, pairs=None) -> torch.Tensor:
    """Counts ``[true, predicted]`` over ``pairs`` (validation by default)."""
    pairs = data.val if pairs is None else pairs
    labels = torch.tensor([data.languages.index(lang) for _, lang in pairs])
    n = len(data.languages)
    flat = labels * n + classifier_predictions(model, data, pairs)
    return torch.bincount(flat, minlength=n * n).reshape(n, n)


def train_classifier(
    model: nn.Module,
    data: SurnameData,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    clip_norm: float | None = 1.0,
    eval_every: int = 100,
    seed: int = 0,
    **config,
) -> History:
    """Train a classifier called as ``logits = model(x, lengths)``; validation loss is cross-entropy on
    ``data.val`` (accuracy: :func:`accuracy`)."""
    device = next(model.parameters()).device
    x_val, len_val, y_val = (t.to(device) for t in data.encode(data.val))

    def loss_fn(m, batch):
        x, lengths, y = batch
        return F.cross_entropy(m(x, lengths), y)

    cfg = TrainConfig(steps=steps, eval_every=eval_every, clip_norm=clip_norm, **config)
    return fit(model, torch.optim.Adam(model.parameters(), lr=lr), data.batches(batch_size, seed), loss_fn,
               lambda m: float(F.cross_entropy(m(x_val, len_val), y_val)), cfg)
