"""Tests of rnnlib.transfer: a model carried over to a new vocabulary computes what the old one did."""
import pytest
import torch
import torch.nn.functional as F

from rnnlib.models import CharLM
from rnnlib.text import Vocab
from rnnlib.transfer import extend_vocab

OLD = Vocab.from_text("abcdefg \n")
NEW = Vocab.from_text("bcdeäöß \n")  # drops a, f, g; adds ä, ö, ß; the ids of shared characters move


def _trained_like(cell="lstm", num_layers=1, impl="torch"):
    torch.manual_seed(0)
    model = CharLM(len(OLD), hidden_size=6, num_layers=num_layers, cell=cell, embedding_dim=4, impl=impl)
    with torch.no_grad():  # weights unlike any fresh initialisation
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model.double()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", ["torch", "rnnlib"])
def test_shared_characters_get_the_same_logits_as_before(cell, impl):
    old = _trained_like(cell, num_layers=2, impl=impl)
    new = extend_vocab(old, OLD, NEW).double()
    assert type(new.rnn) is type(old.rnn) and new.vocab_size == len(NEW) and new.num_layers == 2
    text = "bed cd\nbe"
    logits_old, state_old = old(OLD.encode(text)[None])
    logits_new, state_new = new(NEW.encode(text)[None])
    shared = [c for c in NEW.itos if c in OLD]
    cols_old = [OLD.stoi[c] for c in shared]
    cols_new = [NEW.stoi[c] for c in shared]
    torch.testing.assert_close(logits_new[..., cols_new], logits_old[..., cols_old], rtol=0, atol=1e-12)
    for a, b in zip(state_new if cell == "lstm" else (state_new,), state_old if cell == "lstm" else (state_old,)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_new_characters_start_as_in_a_fresh_model_and_the_old_model_is_untouched():
    old = _trained_like()
    before = {k: v.clone() for k, v in old.state_dict().items()}
    new = extend_vocab(old, OLD, NEW, seed=3)
    torch.manual_seed(3)
    fresh = CharLM(len(NEW), hidden_size=6, embedding_dim=4).double()
    for c in ("ä", "ö", "ß"):
        i = NEW.stoi[c]
        assert torch.equal(new.embedding.weight[i], fresh.embedding.weight[i])
        assert torch.equal(new.head.weight[i], fresh.head.weight[i]) and new.head.bias[i] == fresh.head.bias[i]
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in before.items())
    old_storages = {p.untyped_storage().data_ptr() for p in old.parameters()}
    assert all(p.untyped_storage().data_ptr() not in old_storages for p in new.parameters())  # copies, not shared


def test_extend_vocab_leaves_the_global_random_state_alone():
    old = _trained_like()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    extend_vocab(old, OLD, NEW, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_frozen_recurrent_layer_gets_no_update():
    new = extend_vocab(_trained_like().float(), OLD, NEW)
    new.rnn.requires_grad_(False)
    rnn_before = [p.clone() for p in new.rnn.parameters()]
    head_before = new.head.weight.clone()
    opt = torch.optim.Adam([p for p in new.parameters() if p.requires_grad], lr=0.1)
    ids = NEW.encode("bed cd\nbeäöß\n")[None]
    logits, _ = new(ids[:, :-1])
    F.cross_entropy(logits[0], ids[0, 1:]).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(new.rnn.parameters(), rnn_before))
    assert not torch.equal(new.head.weight, head_before)


def test_extend_vocab_refuses_what_it_cannot_carry_over():
    with pytest.raises(ValueError, match="embedding"):
        extend_vocab(CharLM(len(OLD), hidden_size=4), OLD, NEW)  # one-hot inputs
    with pytest.raises(ValueError, match="built for"):
        extend_vocab(_trained_like(), Vocab.from_text("ab"), NEW)
    with pytest.raises(ValueError, match="share no character"):
        extend_vocab(_trained_like(), OLD, Vocab.from_text("xyz"))
    with pytest.raises(TypeError, match="CharLM"):
        extend_vocab(torch.nn.Linear(2, 2), OLD, NEW)
