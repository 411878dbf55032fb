"""Tests of rnnlib.models: CharLM, sampling, PaddedRNN / SequenceClassifier and reverse_padded."""
import copy
import warnings

import pytest
import torch
from torch import nn

from rnnlib.models import (CELLS, CharLM, PaddedRNN, SequenceClassifier, recurrent_layer, reverse_padded,
                           sample_next)
from rnnlib.text import Vocab

TEXT = "the quick brown fox jumps over the lazy dog"


def _ids(batch, steps, vocab_size, seed=0):
    return torch.randint(0, vocab_size, (batch, steps), generator=torch.Generator().manual_seed(seed))


def _state_close(a, b):
    if isinstance(a, tuple):
        return all(torch.allclose(x, y) for x, y in zip(a, b))
    return torch.allclose(a, b)


# ----------------------------------------------------------------------------------------------- CharLM
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("embedding_dim", [None, 8])
def test_charlm_shapes(cell, embedding_dim):
    model = CharLM(11, hidden_size=6, num_layers=2, cell=cell, embedding_dim=embedding_dim)
    logits, state = model(_ids(3, 5, 11))
    assert logits.shape == (3, 5, 11)
    h = state[0] if cell == "lstm" else state
    assert h.shape == (2, 3, 6)
    assert isinstance(state, tuple) == (cell == "lstm")
    assert (model.embedding is None) == (embedding_dim is None)


@pytest.mark.parametrize("cell", CELLS)
def test_charlm_carried_state_equals_whole_sequence(cell):
    torch.manual_seed(0)
    model = CharLM(7, hidden_size=5, num_layers=2, cell=cell, embedding_dim=4).double()
    x = _ids(2, 9, 7)
    whole, whole_state = model(x)
    first, state = model(x[:, :4])
    second, state = model(x[:, 4:], state)
    assert torch.allclose(torch.cat([first, second], 1), whole)
    assert _state_close(state, whole_state)


@pytest.mark.parametrize("cell", CELLS)
def test_charlm_init_state_is_what_none_means(cell):
    model = CharLM(7, hidden_size=5, num_layers=2, cell=cell).double()
    x = _ids(3, 4, 7)
    assert torch.allclose(model(x)[0], model(x, model.init_state(3))[0])


def test_charlm_refuses_bad_input():
    model = CharLM(5, hidden_size=4)
    with pytest.raises(ValueError, match=r"\(batch, seq_len\).*\(7,\)"):
        model(torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 4\].*vocab_size=5.*from 0 to 9"):
        model(torch.tensor([[0, 9]]))
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 3))


def test_charlm_dropout_between_layers_only_when_stacked():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.nn warns when a 1-layer RNN is given dropout
        single = CharLM(5, hidden_size=4, num_layers=1, dropout=0.5)
    assert single.rnn.dropout == 0.0 and single.drop.p == 0.5
    assert CharLM(5, hidden_size=4, num_layers=2, dropout=0.5).rnn.dropout == 0.5
    with pytest.raises(ValueError, match="dropout"):
        CharLM(5, dropout=1.0)


def test_recurrent_layer_choices():
    with pytest.raises(ValueError, match="cell must be one of"):
        recurrent_layer("transformer", 3, 4)
    with pytest.raises(ValueError, match="impl must be one of"):
        recurrent_layer("gru", 3, 4, impl="keras")
    with pytest.raises(ValueError, match="impl='rnnlib'"):
        recurrent_layer("lstm", 3, 4, forget_bias=1.0)
    assert isinstance(recurrent_layer("gru", 3, 4, reset_after=True), nn.GRU)  # what torch computes
    assert recurrent_layer("rnn", 3, 4, nonlinearity="relu").nonlinearity == "relu"


# ------------------------------------------------------------------------------------------- generation
@pytest.fixture
def lm_and_vocab():
    torch.manual_seed(0)
    vocab = Vocab.from_text(TEXT)
    return CharLM(len(vocab), hidden_size=16, cell="gru", embedding_dim=8), vocab


def test_generate_reproducible_for_a_seed(lm_and_vocab):
    model, vocab = lm_and_vocab
    a = model.generate(vocab, "the ", 40, generator=1)
    b = model.generate(vocab, "the ", 40, generator=torch.Generator().manual_seed(1))
    c = model.generate(vocab, "the ", 40, generator=2)
    assert a == b
    assert a != c
    assert a.startswith("the ") and len(a) == 44
    assert set(a) <= set(vocab.itos)


@pytest.mark.parametrize("cell", CELLS)
def test_generate_gives_the_same_text_with_rnnlib_and_torch_layers(cell):
    torch.manual_seed(0)
    vocab = Vocab.from_text(TEXT)
    theirs = CharLM(len(vocab), hidden_size=16, num_layers=2, cell=cell, embedding_dim=8).double()
    ours = CharLM(len(vocab), hidden_size=16, num_layers=2, cell=cell, embedding_dim=8, impl="rnnlib").double()
    ours.load_state_dict(theirs.state_dict())
    for temperature, top_k in ((1.0, None), (0.7, 5)):
        a = ours.generate(vocab, "the ", 60, temperature=temperature, top_k=top_k, generator=4)
        b = theirs.generate(vocab, "the ", 60, temperature=temperature, top_k=top_k, generator=4)
        assert a == b


def test_generate_leaves_the_global_rng_alone(lm_and_vocab):
    model, vocab = lm_and_vocab
    before = torch.get_rng_state()
    model.generate(vocab, "a", 20, generator=3)
    assert torch.equal(before, torch.get_rng_state())


def _manual_greedy(model, vocab, prompt, length):
    """Greedy decoding without carried state: rerun the whole text each step."""
    ids = vocab.encode(prompt)
    with torch.no_grad():
        for _ in range(length):
            logits, _ = model(ids[None])
            ids = torch.cat([ids, logits[0, -1].argmax().view(1)])
    return vocab.decode(ids)


def test_top_k_1_and_temperature_0_are_greedy(lm_and_vocab):
    model, vocab = lm_and_vocab
    model.eval()
    greedy = _manual_greedy(model, vocab, "fox", 25)
    assert model.generate(vocab, "fox", 25, temperature=0) == greedy
    assert model.generate(vocab, "fox", 25, top_k=1, generator=1) == greedy
    assert model.generate(vocab, "fox", 25, top_k=1, generator=2, temperature=3.0) == greedy


def test_generate_refuses_bad_arguments(lm_and_vocab):
    model, vocab = lm_and_vocab
    with pytest.raises(ValueError, match="'Z' at position 1 is not in the vocabulary"):
        model.generate(vocab, "aZ", 5)
    with pytest.raises(ValueError, match="at least one character"):
        model.generate(vocab, "", 5)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(vocab, "a", 5, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(vocab, "a", 5, top_k=0)
    with pytest.raises(ValueError, match="length"):
        model.generate(vocab, "a", -1)
    with pytest.raises(ValueError, match="built for"):
        model.generate(Vocab.from_text("ab"), "a", 5)


def test_generate_in_eval_mode_and_restores_mode():
    torch.manual_seed(0)
    vocab = Vocab.from_text(TEXT)
    model = CharLM(len(vocab), hidden_size=16, num_layers=2, cell="lstm", dropout=0.5)
    model.train()
    text = model.generate(vocab, "the", 30, temperature=0)
    assert model.training
    assert text == _manual_greedy(model.eval(), vocab, "the", 30)  # no dropout while generating
    model.eval()
    model.generate(vocab, "the", 3)
    assert not model.training


def test_sample_next_top_k_support():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0, 2.8]]).expand(2000, -1)
    ids = sample_next(logits, temperature=5.0, top_k=2, generator=0)
    assert set(ids.tolist()) == {1, 2}
    all_ids = sample_next(logits, temperature=5.0, top_k=None, generator=0)
    assert set(all_ids.tolist()) == {0, 1, 2, 3, 4}


def test_bidirectional_next_character_model_leaks_the_answer():
    """The chapter's leak: with a backward direction, the output at t depends on input t + 1."""
    torch.manual_seed(0)
    x = _ids(1, 8, 6)
    changed = x.clone()
    t = 3
    changed[0, t + 1] = (x[0, t + 1] + 1) % 6
    for bidirectional in (False, True):
        model = CharLM(6, hidden_size=5, cell="lstm", bidirectional=bidirectional).double()
        a, _ = model(x)
        b, _ = model(changed)
        assert torch.allclose(a[:, : t + 1], b[:, : t + 1]) != bidirectional
    with pytest.raises(ValueError, match="bidirectional model cannot generate"):
        model.generate(Vocab(["a", "b", "c", "d", "e", "f"]), "ab", 3)


# --------------------------------------------------------------------------------- rnnlib implementation
@pytest.mark.parametrize("cell", CELLS)
def test_charlm_rnnlib_matches_torch(cell):
    torch.manual_seed(0)
    ours = CharLM(7, hidden_size=5, num_layers=2, cell=cell, embedding_dim=4, impl="rnnlib").double()
    theirs = CharLM(7, hidden_size=5, num_layers=2, cell=cell, embedding_dim=4, impl="torch").double()
    ours.load_state_dict(theirs.state_dict())
    x = _ids(3, 6, 7)
    (a, state_a), (b, state_b) = ours(x), theirs(x)
    assert torch.allclose(a, b)
    assert _state_close(state_a, state_b)
    a2, _ = ours(x, state_a)
    b2, _ = theirs(x, state_b)
    assert torch.allclose(a2, b2)


# ------------------------------------------------------------------------------- padded batches, classifier
def test_reverse_padded():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]])
    lengths = torch.tensor([3, 2, 4])
    expected = torch.tensor([[3, 2, 1, 0], [5, 4, 0, 0], [9, 8, 7, 6]])
    assert torch.equal(reverse_padded(x, lengths), expected)
    features = torch.randn(3, 4, 2)
    once = reverse_padded(features, lengths)
    assert torch.equal(once[1, :2], features[1, :2].flip(0)) and torch.equal(once[1, 2:], features[1, 2:])
    assert torch.equal(reverse_padded(once, lengths), features)
    with pytest.raises(ValueError, match="between 1 and the padded length 4"):
        reverse_padded(x, torch.tensor([3, 0, 4]))


def _padded_batch(vocab_size=9, seed=0):
    lengths = torch.tensor([5, 2, 7, 1])
    x = _ids(4, 7, vocab_size, seed).clamp(min=1)
    x[torch.arange(7)[None, :] >= lengths[:, None]] = 0
    return x, lengths


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_rnn_packed_equals_masked(cell, bidirectional):
    torch.manual_seed(0)
    encoder = PaddedRNN(cell, 3, 4, num_layers=2, bidirectional=bidirectional).double()
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 7, 1])
    out_p, sum_p = encoder.forward_packed(x, lengths)
    out_m, sum_m = encoder.forward_masked(x, lengths)
    assert out_p.shape == out_m.shape == (4, 7, 4 * encoder.num_directions)
    assert torch.allclose(out_p, out_m) and torch.allclose(sum_p, sum_m)
    assert torch.all(out_m[1, 2:] == 0)  # zeros at padding


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_ignores_padding(cell, bidirectional):
    torch.manual_seed(0)
    model = SequenceClassifier(9, 3, hidden_size=6, embedding_dim=5, cell=cell, num_layers=2,
                               bidirectional=bidirectional).double().eval()
    x, lengths = _padded_batch()
    logits = model(x, lengths)
    assert logits.shape == (4, 3)
    longer = torch.cat([x, torch.zeros(4, 5, dtype=torch.long)], 1)
    assert torch.allclose(model(longer, lengths), logits)
    # Whatever sits after the last real token is never read.
    garbage = x.clone()
    garbage[torch.arange(7)[None, :] >= lengths[:, None]] = 8
    assert torch.allclose(model(garbage, lengths), logits)
    masked = model.encoder.forward_masked(model.embedding(longer), lengths)[1]
    assert torch.allclose(model.head(masked), logits)


def test_bidirectional_classifier_reads_last_character_in_both_directions():
    torch.manual_seed(0)
    model = SequenceClassifier(9, 3, hidden_size=4, embedding_dim=5, bidirectional=True).double()
    x, lengths = _padded_batch()
    changed = x.clone()
    rows = torch.arange(4)
    changed[rows, lengths - 1] = x[rows, lengths - 1] % 8 + 1
    a, b = model.features(x, lengths), model.features(changed, lengths)
    assert a.shape == (4, 8)
    for row in range(4):
        assert not torch.allclose(a[row, :4], b[row, :4])  # forward direction: read last
        assert not torch.allclose(a[row, 4:], b[row, 4:])  # backward direction: read first


def test_backward_half_is_a_forward_pass_over_the_reversed_real_tokens():
    torch.manual_seed(0)
    model = SequenceClassifier(9, 3, hidden_size=4, embedding_dim=5, bidirectional=True).double()
    x, lengths = _padded_batch()
    features = model.features(x, lengths)
    rnn = model.encoder.rnn
    forward, backward = nn.GRU(5, 4, batch_first=True).double(), nn.GRU(5, 4, batch_first=True).double()
    for name, _ in forward.named_parameters():
        setattr(forward, name, nn.Parameter(getattr(rnn, name).detach()))
        setattr(backward, name, nn.Parameter(getattr(rnn, name + "_reverse").detach()))
    for row, length in enumerate(lengths.tolist()):
        real = model.embedding(x[row : row + 1, :length])
        assert torch.allclose(features[row, :4], forward(real)[1][0, 0])
        assert torch.allclose(features[row, 4:], backward(real.flip(1))[1][0, 0])


def test_classifier_refuses_bad_lengths():
    model = SequenceClassifier(9, 3, hidden_size=4, embedding_dim=5)
    x, _ = _padded_batch()
    with pytest.raises(ValueError, match=r"lengths of shape \(4,\)"):
        model(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="between 1 and the padded length 7"):
        model(x, torch.tensor([1, 2, 8, 3]))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_rnnlib_matches_torch(cell, bidirectional):
    torch.manual_seed(0)
    kwargs = dict(hidden_size=4, embedding_dim=5, cell=cell, num_layers=2, bidirectional=bidirectional)
    theirs = SequenceClassifier(9, 3, impl="torch", **kwargs).double().eval()
    ours = SequenceClassifier(9, 3, impl="rnnlib", **kwargs).double().eval()
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    x, lengths = _padded_batch()
    expected = theirs(x, lengths)
    assert torch.allclose(ours(x, lengths), expected)
    longer = torch.cat([x, torch.zeros(4, 3, dtype=torch.long)], 1)
    assert torch.allclose(ours(longer, lengths), expected)


def test_sequence_regressor_reads_the_whole_window():
    from rnnlib.models import SequenceRegressor

    torch.manual_seed(0)
    model = SequenceRegressor(input_size=1, hidden_size=8, output_size=2, cell="gru").double()
    x = torch.randn(4, 10, 1, dtype=torch.float64)
    y = model(x)
    assert y.shape == (4, 2)
    x2 = x.clone()
    x2[:, 0] += 1.0  # the first value of the window must influence the prediction
    assert not torch.allclose(model(x2), y)
    out, _ = model.rnn(x)
    assert torch.allclose(y, model.head(out[:, -1]))
    with pytest.raises(ValueError, match=r"\(batch, seq_len, 1\)"):
        model(torch.randn(4, 10))
