"""rnnlib.exercises (the exercises' given code) and rnnlib.solutions (the hidden reference answers)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnlib import solutions
from rnnlib.attention import Seq2Seq
from rnnlib.exercises import adding_accuracy, exact_match, predict, sweep, train_regressor, train_seq2seq, translate
from rnnlib.synthetic import adding_problem, date_vocabs, random_dates


class WindowMean(nn.Module):
    """Predicts a * mean(window) + b: enough to learn a target that is the window mean."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x):
        return self.linear(x.mean(1)).squeeze(-1)


def test_train_regressor_fits_and_predict_restores_the_mode():
    torch.manual_seed(0)
    X = torch.randn(200, 5, 1)
    y = 2 * X.mean(1)[:, 0] + 1
    model = WindowMean()
    history = train_regressor(model, X[:150], y[:150], X[150:], y[150:], steps=300, lr=0.05, eval_every=100,
                              progress=False)
    assert history.val_loss[-1] < 1e-3 < history.val_loss[0]
    model.train()
    assert torch.allclose(predict(model, X, batch_size=7), model(X), atol=1e-6) and model.training


def test_train_regressor_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        train_regressor(WindowMean(), torch.zeros(4, 3, 1), torch.zeros(5), torch.zeros(2, 3, 1), torch.zeros(2), 1)


class Constant(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x):
        return self.value.expand(x.size(0), 1)


class Oracle(Constant):
    def forward(self, x):  # the sum of the two marked values: a perfect model
        return ((x[..., 0] * x[..., 1]).sum(1, keepdim=True)) + 0 * self.value


def test_adding_accuracy():
    assert adding_accuracy(Oracle(0), seq_len=20) == 1.0
    # Always 1: the sum is triangular on [0, 2], so P(|sum - 1| < 0.04) = 2(0.04) - 0.04^2 = 0.0784.
    assert abs(adding_accuracy(Constant(1.0), seq_len=20, n=4000) - 0.0784) < 0.015
    assert adding_accuracy(Constant(5.0), seq_len=20) == 0.0


class ScriptedDecoder(nn.Module):
    """A stand-in for Seq2Seq whose greedy decoder emits given strings (and a diagonal attention)."""

    def __init__(self, outputs, tgt_vocab, eos=True):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.outputs, self.tgt_vocab, self.eos = outputs, tgt_vocab, eos

    def greedy_decode(self, src, src_lengths, max_len, bos_id, eos_id):
        rows = [[self.tgt_vocab.stoi[c] for c in text] + ([eos_id] if self.eos else []) for text in self.outputs]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        return ids, torch.eye(width, src.size(1)).expand(len(rows), -1, -1)


def test_exact_match_and_translate_follow_the_decoder():
    src_vocab, tgt_vocab = date_vocabs()
    pairs = [("3 May 1994", "1994-05-03"), ("Jan 1 2000", "2000-01-01")]
    assert exact_match(ScriptedDecoder(["1994-05-03", "2000-01-01"], tgt_vocab), pairs, src_vocab, tgt_vocab) == 1.0
    assert exact_match(ScriptedDecoder(["1994-05-03", "2000-01-02"], tgt_vocab), pairs, src_vocab, tgt_vocab) == 0.5
    # Right characters but no <eos>: the decoder would have gone on, so it does not count.
    assert exact_match(ScriptedDecoder(["1994-05-03", "2000-01-01"], tgt_vocab, eos=False), pairs, src_vocab,
                       tgt_vocab) == 0.0
    out = translate(ScriptedDecoder(["1994-05-03"], tgt_vocab), "3 May 1994", src_vocab, tgt_vocab)
    assert out.text == "1994-05-03" and out.tokens == list("1994-05-03") + ["<eos>"]
    assert out.weights.shape == (11, 10)  # one row per emitted token, one column per source character


def test_train_seq2seq_lowers_the_loss():
    torch.manual_seed(0)
    src_vocab, tgt_vocab = date_vocabs()
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), hidden_size=16, embedding_dim=8)
    history = train_seq2seq(model, random_dates(200, seed=0), random_dates(50, seed=1), src_vocab, tgt_vocab,
                            steps=30, batch_size=16, lr=1e-2, eval_every=15, progress=False)
    assert history.val_step == [0, 15, 30] and history.val_loss[-1] < history.val_loss[0]
    assert 0.0 <= exact_match(model, random_dates(20, seed=2), src_vocab, tgt_vocab) <= 1.0


def test_sweep_runs_every_combination_and_times_it():
    table = sweep(lambda a, b: {"product": a * b}, grid={"a": [1, 2], "b": [10, 20, 30]})
    assert len(table) == 6 and list(table.columns) == ["a", "b", "product", "seconds"]
    assert table["product"].tolist() == [10, 20, 30, 20, 40, 60]
    table = sweep(lambda a: {"twice": 2 * a}, configs=[{"a": 3}, {"a": 5}])
    assert table["twice"].tolist() == [6, 10]
    with pytest.raises(ValueError, match="exactly one"):
        sweep(lambda a: {}, grid={"a": [1]}, configs=[{"a": 1}])


def test_solutions_are_hidden_until_requested(monkeypatch):
    monkeypatch.delenv("RNNLIB_SOLUTIONS", raising=False)
    assert not solutions.requested()
    monkeypatch.setenv("RNNLIB_SOLUTIONS", "1")
    assert solutions.requested()
    monkeypatch.setenv("RNNLIB_SOLUTIONS", "maybe")
    with pytest.raises(ValueError, match="0 or 1"):
        solutions.requested()
    text = solutions.source("7.2", "LSTMCell")
    assert text.startswith("class LSTMCell") and "torch.sigmoid" in text
    assert "def run_lstm" in solutions.source("7.2")
    with pytest.raises(ValueError, match="7.1, 7.2"):
        solutions.module("8.1")
    with pytest.raises(ValueError, match="has no 'GRUCell'"):
        solutions.source("7.2", "GRUCell")


def test_every_exercise_has_a_solution_module_with_what_the_notebook_imports():
    expected = {"7.1": ["split_by_time", "normalize_splits", "make_windows", "naive_forecast", "Forecaster"],
                "7.2": ["LSTMCell", "run_lstm"], "7.3": ["GRUCell"], "7.4": ["reverse_padded", "bidirectional"],
                "7.5": ["masked_softmax", "additive_scores", "dot_scores"]}
    for exercise, names in expected.items():
        module = solutions.module(exercise)
        assert all(hasattr(module, name) for name in names), exercise
