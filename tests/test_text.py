"""Vocabulary, split and the two ways of batching a text."""
import pytest
import torch

from rnnlib.text import Vocab, num_sequential_batches, pad_sequences, random_batches, sequential_batches, train_val_split

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20


def test_vocab_round_trip_and_order():
    v = Vocab.from_text(TEXT)
    assert v.decode(v.encode(TEXT)) == TEXT
    assert v.itos == sorted(set(TEXT))
    assert len(v) == len(set(TEXT))


def test_vocab_specials_first_and_skipped():
    v = Vocab.from_text("abc", specials=("<pad>", "<eos>"))
    assert v.stoi["<pad>"] == 0 and v.stoi["<eos>"] == 1
    assert v.decode([2, 3, 1, 0], skip_specials=True) == "ab"


def test_unknown_character_error_names_it():
    v = Vocab.from_text("abc")
    with pytest.raises(ValueError, match=r"'z' at position 1 is not in the vocabulary"):
        v.encode("azb")


def test_empty_text_and_bad_ids():
    with pytest.raises(ValueError, match="empty"):
        Vocab.from_text("")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Vocab.from_text("ab").decode([5])


def test_split_by_position():
    train, val = train_val_split(TEXT, 0.1)
    assert train + val == TEXT and abs(len(val) - 0.1 * len(TEXT)) <= 1
    with pytest.raises(ValueError):
        train_val_split(TEXT, 1.5)


def test_random_batches_shapes_and_shift():
    ids = torch.arange(1000)
    X, Y = next(random_batches(ids, batch_size=8, seq_len=20, generator=torch.Generator().manual_seed(0)))
    assert X.shape == Y.shape == (8, 20)
    assert torch.equal(Y, X + 1)  # ids are positions, so the target is the next position


def test_sequential_batches_rows_continue_across_batches():
    ids = torch.arange(1001)
    batches = list(sequential_batches(ids, batch_size=4, seq_len=10))
    assert len(batches) == num_sequential_batches(1001, 4, 10) == 25
    for (X0, Y0), (X1, _) in zip(batches, batches[1:]):
        assert X0.shape == (4, 10)
        assert torch.equal(Y0, X0 + 1)
        assert torch.equal(X1[:, 0], X0[:, -1] + 1)  # row b of batch k+1 starts where row b of batch k ended
    first_column = torch.stack([X[:, 0] for X, _ in batches], dim=1)
    assert torch.equal(first_column[0], torch.arange(0, 250, 10))


def test_batching_errors_are_helpful():
    with pytest.raises(ValueError, match="needs at least 51 tokens"):
        next(random_batches(torch.arange(20), 2, 50))
    with pytest.raises(ValueError, match="1-D tensor"):
        next(sequential_batches(torch.zeros(3, 3, dtype=torch.long), 2, 2))
    with pytest.raises(ValueError, match="positive"):
        next(random_batches(torch.arange(20), 0, 5))


def test_pad_sequences():
    padded, lengths = pad_sequences([torch.tensor([1, 2, 3]), torch.tensor([4])], pad_id=0)
    assert padded.tolist() == [[1, 2, 3], [4, 0, 0]] and lengths.tolist() == [3, 1]
    with pytest.raises(ValueError, match="non-empty"):
        pad_sequences([torch.tensor([], dtype=torch.long)])
