"""The shared experiment helpers: they train what they claim, on the splits they claim."""
import pytest
import torch

from rnnlib.models import CharLM, SequenceClassifier, SequenceRegressor
from rnnlib.synthetic import ADDING_BASELINE_MSE
from rnnlib.tasks import SurnameData, accuracy, confusion_matrix, train_adding, train_char_lm, train_classifier

PAIRS = [(n, "A") for n in ["abba", "abab", "aab", "baba", "abb", "bab", "aaab", "abbb", "aba", "bbab"]] + \
        [(n, "Z") for n in ["zyx", "zzy", "yzz", "xyz", "zxy", "yyx", "xzz", "zyy", "yxz", "xxy"]]


def test_surname_split_is_stratified_and_disjoint():
    data = SurnameData.split(PAIRS, val_fraction=0.2, seed=0)
    assert data.languages == ["A", "Z"] and data.vocab.stoi["<pad>"] == 0
    assert sorted(data.train + data.val) == sorted(PAIRS)
    assert sorted(lang for _, lang in data.val) == ["A", "A", "Z", "Z"]
    x, lengths, y = data.encode(data.val)
    assert x.shape == (4, int(lengths.max())) and y.tolist() == [0, 0, 1, 1]


def test_train_classifier_learns_a_separable_task():
    torch.manual_seed(0)
    data = SurnameData.split(PAIRS, val_fraction=0.2, seed=0)
    model = SequenceClassifier(len(data.vocab), 2, hidden_size=16, embedding_dim=8)
    h = train_classifier(model, data, steps=60, batch_size=8, lr=0.02, eval_every=30, progress=False)
    assert h.val_loss[-1] < h.val_loss[0] and accuracy(model, data) == 1.0
    cm = confusion_matrix(model, data)
    assert cm.tolist() == [[2, 0], [0, 2]]


def test_train_adding_beats_the_baseline_on_short_sequences():
    torch.manual_seed(0)
    model = SequenceRegressor(input_size=2, hidden_size=16, cell="lstm")
    h = train_adding(model, seq_len=10, steps=300, batch_size=64, lr=1e-2, eval_every=150, progress=False)
    assert h.val_loss[0] > ADDING_BASELINE_MSE  # untrained: no better than always predicting 1
    assert h.val_loss[-1] < 0.3 * ADDING_BASELINE_MSE


def test_train_char_lm_reduces_validation_loss():
    torch.manual_seed(0)
    ids = torch.tensor([0, 1, 2, 3] * 300)
    model = CharLM(4, hidden_size=16, cell="gru")
    h = train_char_lm(model, ids[:1000], ids[1000:], steps=40, batch_size=8, seq_len=20, lr=0.02, eval_every=20,
                      progress=False)
    assert h.val_step == [0, 20, 40] and h.val_loss[-1] < 0.1 < h.val_loss[0]


def test_train_adding_stop_below_is_the_same_run_cut_short():
    """Stopping at a threshold changes nothing before the stop: the same losses, step for step."""
    def run(**kw):
        torch.manual_seed(0)
        model = SequenceRegressor(input_size=2, hidden_size=16, cell="lstm")
        return train_adding(model, seq_len=10, steps=300, lr=1e-2, eval_every=50, progress=False, **kw)

    full, cut = run(), run(stop_below=0.05)
    first_hit = next(k for k, v in enumerate(full.val_loss) if v < 0.05)   # this LSTM gets there within 300 steps
    assert 0 < first_hit < len(full.val_loss) - 1                         # ... and not at the very end
    assert cut.val_step == full.val_step[: first_hit + 1]
    assert cut.val_loss == full.val_loss[: first_hit + 1]
    assert cut.train_loss == full.train_loss[: cut.steps_done] and cut.steps_done == full.val_step[first_hit]
    never = run(stop_below=0.0)                                           # a threshold never reached: the full run
    assert never.val_loss == full.val_loss and never.steps_done == 300
    with pytest.raises(ValueError, match="eval_every"):
        train_adding(SequenceRegressor(input_size=2, hidden_size=4), seq_len=5, steps=2, eval_every=None,
                     stop_below=0.1, progress=False)

