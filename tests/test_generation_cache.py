"""CausalAttentionLM.generate with a key-value cache: the same text as rereading everything, at a cost
linear in the context (and bounded by a window), and clear refusals of temperatures it cannot use."""
import math

import pytest
import torch

from rnnlib import attention as attention_module
from rnnlib.attention import CausalAttentionLM
from rnnlib.models import CharLM, sample_next
from rnnlib.text import Vocab

VOCAB = Vocab.from_text("abcdefgh ")


def model(attention="dot", cell="lstm", dtype=torch.float32, seed=0, **kw):
    torch.manual_seed(seed)
    return CausalAttentionLM(len(VOCAB), hidden_size=8, embedding_dim=4, cell=cell, attention=attention,
                             **kw).to(dtype)


def rereading(m, prompt, n, temperature, top_k=None, seed=0):
    """What generation did before the cache: the whole text through forward for every character."""
    g = torch.Generator().manual_seed(seed)
    ids = VOCAB.encode(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = m(ids[None])[0][:, -1]  # (1, V), with a (T, T) causal attention inside
            ids = torch.cat([ids, sample_next(logits, temperature, top_k, g)])
    return VOCAB.decode(ids)


@pytest.mark.parametrize("attention", ["dot", "additive"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cached_generation_gives_the_text_of_rereading_everything(attention, cell, dtype):
    m = model(attention, cell, dtype)
    prompt = "a bad cafe had a bag " * 3
    for temperature, top_k, seed in [(0, None, 0), (1.0, None, 1), (0.7, 3, 2), (1.5, None, 3)]:
        expected = rereading(m, prompt, 40, temperature, top_k, seed)
        assert m.generate(VOCAB, prompt, 40, temperature, top_k, generator=seed) == expected, (temperature, seed)


def test_each_character_is_read_once_and_attends_with_one_query(monkeypatch):
    m = model("additive")
    projected, queries = [], []
    original_w_k, original_w_q = m.attention.W_k.forward, m.attention.W_q.forward
    monkeypatch.setattr(m.attention.W_k, "forward", lambda h: projected.append(h.size(1)) or original_w_k(h))
    monkeypatch.setattr(m.attention.W_q, "forward", lambda q: queries.append(q.size(1)) or original_w_q(q))
    monkeypatch.setattr(attention_module, "causal_mask", lambda *a, **k: pytest.fail("a T x T mask was built"))
    m.generate(VOCAB, "abc " * 50, 30, temperature=1.0, generator=0)
    assert sum(projected) == 200 + 30 and projected[0] == 200  # every position's key computed exactly once
    assert set(queries) == {1} and len(queries) == 31  # one query per new character (and one for the prompt)


def test_the_cache_grows_linearly_and_a_window_bounds_it():
    m = model("dot")
    with torch.no_grad():
        logits, cache = m.read(VOCAB.encode("abcdefgh" * 25)[None])
        assert cache.length == 200 and cache.keys is cache.values  # dot attention: keys are the values
        assert cache.nbytes == 200 * 8 * 4  # positions x hidden size x float32
        for _ in range(100):
            logits, cache = m.read(logits.argmax(-1, keepdim=True), cache)
        assert cache.length == 300 and 300 * 32 <= cache.nbytes <= 2 * 300 * 32  # doubled as it grew
        _, windowed = m.read(VOCAB.encode("abcdefgh" * 25)[None], window=16)
        for _ in range(100):
            _, windowed = m.read(torch.tensor([[1]]), windowed)
        assert windowed.length == 300 and windowed.nbytes == 16 * 8 * 4
    additive = model("additive")
    with torch.no_grad():
        _, cache = additive.read(VOCAB.encode("abcdefgh" * 25)[None])
    assert cache.nbytes == 200 * (8 + 8) * 4  # values and projected keys


@pytest.mark.parametrize("attention", ["dot", "additive"])
def test_a_window_attends_over_exactly_the_last_positions(attention):
    m = model(attention, dtype=torch.float64)
    ids = VOCAB.encode("a bad cafe had a bag a bad cab had a fad")
    T, W = len(ids), 7
    with torch.no_grad():
        h, _ = m.rnn(m.embedding(ids[None]))  # (1, T, H)
        c, _ = m.attention(h[:, -1], h[:, T - W:])  # the last query over the last W hidden states
        expected = m.head(torch.cat([h[:, -1], c], dim=-1))
        got, cache = m.read(ids[None, :20], window=W)  # the prompt longer than the window ...
        for t in range(20, T):  # ... then one character at a time, wrapping around the ring
            got, cache = m.read(ids[None, t:t + 1], cache)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_a_window_as_long_as_the_text_changes_nothing():
    m = model("additive")
    full = m.generate(VOCAB, "a bad cafe ", 30, temperature=1.0, generator=4)
    assert m.generate(VOCAB, "a bad cafe ", 30, temperature=1.0, generator=4, window=41) == full
    assert m.generate(VOCAB, "a bad cafe ", 30, temperature=1.0, generator=4, window=3) != full
    with pytest.raises(ValueError, match="window must be a positive int"):
        m.generate(VOCAB, "abc", 3, window=0)


@pytest.mark.parametrize("temperature, message", [
    (math.inf, "temperature must be finite"),
    (math.nan, "temperature must be a number >= 0"),
    (-0.5, "temperature must be a number >= 0"),
    (1e-45, "below the smallest normal torch.float32 number"),
])
@pytest.mark.parametrize("kind", ["attention", "charlm"])
def test_temperatures_that_cannot_work_are_refused_with_a_reason(temperature, message, kind):
    m = model() if kind == "attention" else CharLM(len(VOCAB), hidden_size=8)
    with pytest.raises(ValueError, match=message):
        m.generate(VOCAB, "abc", 5, temperature=temperature, generator=0)


def test_a_tiny_normal_temperature_is_greedy_and_float64_accepts_what_float32_cannot():
    m = model("dot")
    greedy = m.generate(VOCAB, "a bad ", 20, temperature=0)
    assert m.generate(VOCAB, "a bad ", 20, temperature=1e-30, generator=0) == greedy  # logits / 1e-30 overflows
    m64 = model("dot", dtype=torch.float64)
    assert m64.generate(VOCAB, "a bad ", 20, temperature=1e-45, generator=0) == m64.generate(VOCAB, "a bad ", 20, 0)


def test_broken_weights_are_named_instead_of_a_multinomial_error():
    m = model("dot")
    with torch.no_grad():
        m.head.bias[2] = math.nan
    with pytest.raises(ValueError, match="logits hold NaN"):
        m.generate(VOCAB, "abc", 5, generator=0)
