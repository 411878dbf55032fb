"""Tests of rnnlib.attention: masked softmax, the two scores, Seq2Seq and the causal attention LM."""
import math

import pytest
import torch
import torch.nn.functional as F

from rnnlib.attention import (AdditiveAttention, CausalAttentionLM, DotProductAttention, Seq2Seq, causal_mask,
                              masked_softmax)
from rnnlib.text import Vocab

PAD, BOS, EOS = 0, 1, 2


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------- masked softmax, mask
def test_masked_softmax_weights():
    scores = torch.randn(4, 6, generator=_gen(), dtype=torch.float64)
    mask = torch.rand(4, 6, generator=_gen(1)) > 0.4
    mask[:, 0] = True
    mask[3] = False  # a fully masked row
    weights = masked_softmax(scores, mask)
    assert torch.all(weights[~mask] == 0)
    assert torch.allclose(weights[:3].sum(-1), torch.ones(3, dtype=torch.float64))
    assert torch.all(weights[3] == 0)
    row = scores[0][mask[0]]
    assert torch.allclose(weights[0][mask[0]], torch.softmax(row, 0))
    assert torch.allclose(masked_softmax(scores, None), torch.softmax(scores, -1))


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    scores = torch.randn(2, 3, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    weights = masked_softmax(scores, mask)
    assert not torch.isnan(weights).any() and torch.all(weights[1] == 0) and weights[0, 1] == 0
    (weights * torch.arange(3.0)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.all(scores.grad[1] == 0) and torch.all(scores.grad[0, 1] == 0)


def test_masked_softmax_wants_a_bool_mask():
    with pytest.raises(TypeError, match="bool"):
        masked_softmax(torch.zeros(2, 3), torch.ones(2, 3))


def test_causal_mask():
    mask = causal_mask(5)
    assert mask.shape == (5, 5) and mask.dtype == torch.bool
    for t in range(5):
        for j in range(5):
            assert bool(mask[t, j]) == (j <= t)


# --------------------------------------------------------------------------------------- attention modules
MODULES = {
    "additive": lambda: AdditiveAttention(3, 5, 4),
    "dot-projected": lambda: DotProductAttention(3, 5),
    "dot": lambda: DotProductAttention(5, 5),
}


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("num_queries", [None, 4])
def test_weights_sum_to_one_and_vanish_on_masked_positions(name, num_queries):
    torch.manual_seed(0)
    attention = MODULES[name]().double()
    B, S, Dv = 3, 6, 2
    q_shape = (B, attention.query_size) if num_queries is None else (B, num_queries, attention.query_size)
    query = torch.randn(*q_shape, dtype=torch.float64)
    keys = torch.randn(B, S, 5, dtype=torch.float64)
    values = torch.randn(B, S, Dv, dtype=torch.float64)
    mask_shape = (B, S) if num_queries is None else (B, num_queries, S)
    mask = torch.rand(*mask_shape, generator=_gen(2)) > 0.5
    mask[..., 0] = True
    mask[1] = False  # every query of example 1 fully masked
    context, weights = attention(query, keys, values, mask=mask)
    assert weights.shape == mask_shape
    assert context.shape == mask_shape[:-1] + (Dv,)
    assert torch.all(weights[~mask] == 0)
    one = torch.ones((), dtype=torch.float64)
    assert torch.allclose(weights[0].sum(-1), one) and torch.allclose(weights[2].sum(-1), one)
    assert torch.all(weights[1] == 0) and torch.all(context[1] == 0)
    assert torch.allclose(context, weights @ values if num_queries else (weights[:, None] @ values)[:, 0])
    # a (B, S) mask applies to every query; values default to the keys
    context, weights = attention(query, keys, mask=mask if num_queries is None else mask[:, 0])
    assert context.shape[-1] == 5
    if num_queries:
        assert torch.all(weights[~mask[:, :1].expand_as(weights)] == 0)


def test_additive_score_by_hand():
    attention = AdditiveAttention(2, 3, 2).double()
    W_q = torch.tensor([[0.5, -1.0], [0.25, 0.75]], dtype=torch.float64)
    W_k = torch.tensor([[1.0, 0.0, -0.5], [0.2, 0.3, 0.4]], dtype=torch.float64)
    v = torch.tensor([1.5, -2.0], dtype=torch.float64)
    with torch.no_grad():
        attention.W_q.weight.copy_(W_q)
        attention.W_k.weight.copy_(W_k)
        attention.v.weight.copy_(v[None])
    s = [0.3, -0.7]
    h = [[1.0, 2.0, 0.5], [-1.0, 0.0, 1.0], [0.2, 0.2, 0.2]]
    e = []
    for h_j in h:
        pre = [sum(W_q[a, i] * s[i] for i in range(2)) + sum(W_k[a, i] * h_j[i] for i in range(3)) for a in range(2)]
        e.append(sum(v[a] * math.tanh(pre[a]) for a in range(2)))
    alpha = [math.exp(x) / sum(math.exp(y) for y in e) for x in e]
    c = [sum(alpha[j] * h[j][i] for j in range(3)) for i in range(3)]
    context, weights = attention(torch.tensor([s], dtype=torch.float64), torch.tensor([h], dtype=torch.float64))
    assert torch.allclose(weights[0], torch.tensor(alpha, dtype=torch.float64))
    assert torch.allclose(context[0], torch.tensor(c, dtype=torch.float64))
    # masking the middle key renormalises over the other two
    mask = torch.tensor([[True, False, True]])
    _, weights = attention(torch.tensor([s]).double(), torch.tensor([h]).double(), mask=mask)
    z = math.exp(e[0]) + math.exp(e[2])
    assert torch.allclose(weights[0], torch.tensor([math.exp(e[0]) / z, 0.0, math.exp(e[2]) / z], dtype=torch.float64))


@pytest.mark.parametrize("scaled", [True, False])
def test_dot_product_score_by_hand(scaled):
    attention = DotProductAttention(2, 2, scaled=scaled)
    assert attention.W_q is None and len(list(attention.parameters())) == 0  # equal sizes: no projection
    s = [1.0, -0.5]
    h = [[0.5, 1.0], [2.0, -1.0], [0.0, 0.3], [1.0, 1.0]]
    scale = math.sqrt(2) if scaled else 1.0
    e = [(s[0] * h_j[0] + s[1] * h_j[1]) / scale for h_j in h]
    alpha = [math.exp(x) / sum(math.exp(y) for y in e) for x in e]
    _, weights = attention(torch.tensor([s]).double(), torch.tensor([h]).double())
    assert torch.allclose(weights[0], torch.tensor(alpha, dtype=torch.float64))


def test_dot_product_projects_when_sizes_differ():
    attention = DotProductAttention(2, 3).double()
    W_q = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]], dtype=torch.float64)
    with torch.no_grad():
        attention.W_q.weight.copy_(W_q)
    s = torch.tensor([0.4, -0.2], dtype=torch.float64)
    h = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]], dtype=torch.float64)
    projected = [sum(W_q[a, i] * s[i] for i in range(2)) for a in range(3)]
    e = torch.tensor([sum(projected[a] * h[j, a] for a in range(3)) / math.sqrt(3) for j in range(2)])
    _, weights = attention(s[None], h[None])
    assert torch.allclose(weights[0], torch.softmax(e.double(), 0))


def test_attention_shape_errors():
    attention = AdditiveAttention(3, 5, 4)
    keys = torch.randn(2, 6, 5)
    with pytest.raises(ValueError, match=r"query of shape \(batch, 3\)"):
        attention(torch.randn(2, 4), keys)
    with pytest.raises(ValueError, match=r"keys of shape \(2, src_len, 5\)"):
        attention(torch.randn(2, 3), torch.randn(2, 6, 4))
    with pytest.raises(ValueError, match=r"keys of shape \(2, src_len, 5\)"):
        attention(torch.randn(2, 3), torch.randn(3, 6, 5))
    with pytest.raises(ValueError, match="values"):
        attention(torch.randn(2, 3), keys, torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 6\)"):
        attention(torch.randn(2, 3), keys, mask=torch.ones(2, 1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 6\) or \(2, 4, 6\)"):
        attention(torch.randn(2, 4, 3), keys, mask=torch.ones(2, 6, 6, dtype=torch.bool))


# ------------------------------------------------------------------------------------ causal attention LM
@pytest.mark.parametrize("attention", ["dot", "additive"])
def test_causal_lm_does_not_see_the_future(attention):
    torch.manual_seed(0)
    model = CausalAttentionLM(7, hidden_size=6, cell="gru", attention=attention, causal=True).double()
    x = torch.randint(0, 7, (2, 9), generator=_gen())
    logits, _, weights = model(x)
    assert logits.shape == (2, 9, 7) and weights.shape == (2, 9, 9)
    assert torch.all(weights[:, ~causal_mask(9)] == 0)
    for t in range(8):
        changed = x.clone()
        changed[:, t + 1 :] = (x[:, t + 1 :] + 1) % 7
        assert torch.allclose(model(changed)[0][:, : t + 1], logits[:, : t + 1])


@pytest.mark.parametrize("attention", ["dot", "additive"])
def test_non_causal_lm_leaks_the_future(attention):
    """causal=False reproduces the source chapter's mistake: step t reads the character it predicts."""
    torch.manual_seed(0)
    model = CausalAttentionLM(7, hidden_size=6, cell="lstm", attention=attention, causal=False).double()
    x = torch.randint(0, 7, (2, 9), generator=_gen())
    logits, _, weights = model(x)
    assert torch.all(weights[:, ~causal_mask(9)] > 0)
    changed = x.clone()
    changed[:, 4] = (x[:, 4] + 1) % 7
    assert not torch.allclose(model(changed)[0][:, :4], logits[:, :4])


@pytest.mark.parametrize("attention", ["dot", "additive"])
def test_causal_lm_generation_matches_forward(attention):
    """Greedy generation (cached states, attending over the past) equals rereading the whole text."""
    torch.manual_seed(0)
    vocab = Vocab.from_text("abcdefgh ")
    model = CausalAttentionLM(len(vocab), hidden_size=8, embedding_dim=4, cell="lstm", attention=attention)
    text = model.generate(vocab, "abc", 12, temperature=0)
    ids = vocab.encode("abc")
    with torch.no_grad():
        for _ in range(12):
            ids = torch.cat([ids, model(ids[None])[0][0, -1].argmax().view(1)])
    assert text == vocab.decode(ids)
    assert model.generate(vocab, "ab", 20, generator=5) == model.generate(vocab, "ab", 20, generator=5)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        model.generate(vocab, "xyz", 3)


def test_causal_lm_state_carries_across_calls():
    torch.manual_seed(0)
    model = CausalAttentionLM(5, hidden_size=4, cell="gru").double()
    x = torch.randint(0, 5, (2, 6), generator=_gen())
    _, state, _ = model(x[:, :3])
    assert state.shape == (1, 2, 4)
    _, state2, weights = model(x[:, 3:], state)
    assert weights.shape == (2, 3, 3)
    assert torch.allclose(state2, model(x)[1])


# ------------------------------------------------------------------------------------------------ Seq2Seq
def _reversal_batch(batch, gen, vocab_size=11, lo=3, hi=7):
    """Source: random symbols; target: the same symbols reversed, then EOS."""
    lengths = torch.randint(lo, hi + 1, (batch,), generator=gen)
    src = torch.full((batch, int(lengths.max())), PAD)
    tgt = torch.full((batch, int(lengths.max()) + 2), PAD)
    for b, length in enumerate(lengths.tolist()):
        symbols = torch.randint(3, vocab_size, (length,), generator=gen)
        src[b, :length] = symbols
        tgt[b, 0], tgt[b, 1 : length + 1], tgt[b, length + 1] = BOS, symbols.flip(0), EOS
    return src, lengths, tgt[:, :-1], tgt[:, 1:]


@pytest.mark.parametrize("attention", ["additive", "dot", None])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_seq2seq_shapes_and_weights(attention, cell):
    torch.manual_seed(0)
    model = Seq2Seq(11, 13, hidden_size=8, embedding_dim=4, attention=attention, cell=cell).double()
    src, lengths, tgt_in, _ = _reversal_batch(4, _gen())
    logits, weights = model(src, lengths, tgt_in)
    assert logits.shape == (4, tgt_in.size(1), 13)
    tokens, greedy_weights = model.greedy_decode(src, lengths, max_len=6, bos_id=BOS, eos_id=EOS)
    assert tokens.shape[0] == 4 and 1 <= tokens.shape[1] <= 6
    if attention is None:
        assert weights is None and greedy_weights is None
        return
    assert weights.shape == (4, tgt_in.size(1), src.size(1))
    real = torch.arange(src.size(1))[None, :] < lengths[:, None]  # (B, S)
    assert torch.all(weights.masked_select(~real[:, None, :]) == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(4, tgt_in.size(1), dtype=torch.float64))
    assert greedy_weights.shape == (4, tokens.shape[1], src.size(1))
    assert torch.all(greedy_weights.masked_select(~real[:, None, :]) == 0)
    # Extra source padding changes nothing.
    longer = torch.cat([src, torch.zeros(4, 3, dtype=torch.long)], 1)
    logits2, weights2 = model(longer, lengths, tgt_in)
    assert torch.allclose(logits2, logits) and torch.allclose(weights2[..., : src.size(1)], weights)


def test_seq2seq_refuses_bad_input():
    model = Seq2Seq(11, 13, hidden_size=8, embedding_dim=4)
    src, lengths, tgt_in, _ = _reversal_batch(4, _gen())
    with pytest.raises(ValueError, match="tgt_in"):
        model(src, lengths, tgt_in + 13)
    with pytest.raises(ValueError, match="same batch size"):
        model(src, lengths, tgt_in[:2])
    with pytest.raises(ValueError, match="lengths"):
        model(src, lengths[:3], tgt_in)
    with pytest.raises(ValueError, match="attention must be"):
        Seq2Seq(11, 13, attention="multiplicative")


def test_seq2seq_greedy_decode_stops_after_eos():
    torch.manual_seed(0)
    model = Seq2Seq(11, 13, hidden_size=8, embedding_dim=4)
    with torch.no_grad():
        model.head.bias.fill_(0.0)
        model.head.weight.fill_(0.0)
        model.head.bias[EOS] = 1.0  # always predicts EOS
    src, lengths, _, _ = _reversal_batch(3, _gen())
    tokens, weights = model.greedy_decode(src, lengths, max_len=10, bos_id=BOS, eos_id=EOS)
    assert tokens.tolist() == [[EOS]] * 3 and weights.shape == (3, 1, src.size(1))


@pytest.mark.parametrize("attention", ["additive", None])
def test_seq2seq_free_running_reads_its_own_greedy_predictions(attention):
    torch.manual_seed(0)
    model = Seq2Seq(11, 13, hidden_size=8, embedding_dim=4, attention=attention).double().eval()
    src, lengths, tgt_in, _ = _reversal_batch(5, _gen())
    logits, _ = model(src, lengths, tgt_in, teacher_forcing=0.0)
    # Free running feeds back the arg max, exactly as greedy decoding does (up to each row's first EOS).
    tokens, _ = model.greedy_decode(src, lengths, max_len=tgt_in.size(1), bos_id=BOS, eos_id=EOS)
    own = logits.argmax(-1)
    for b in range(5):
        row = own[b].tolist()
        n = row.index(EOS) + 1 if EOS in row else len(row)
        assert tokens[b, :n].tolist() == row[:n]
    # Only the first input (BOS) is read: the rest of tgt_in cannot change the logits.
    scrambled = torch.cat([tgt_in[:, :1], torch.randint(3, 13, tgt_in[:, 1:].shape, generator=_gen(5))], 1)
    assert torch.equal(model(src, lengths, scrambled, teacher_forcing=0.0)[0], logits)
    # With teacher forcing the same scrambling changes the logits after the first step, and only those.
    forced, scrambled_forced = model(src, lengths, tgt_in)[0], model(src, lengths, scrambled)[0]
    assert torch.equal(forced[:, 0], scrambled_forced[:, 0]) and not torch.allclose(forced, scrambled_forced)


def test_seq2seq_scheduled_sampling_mixes_true_and_own_tokens():
    torch.manual_seed(0)
    model = Seq2Seq(11, 13, hidden_size=8, embedding_dim=4, attention=None).double()
    src, lengths, tgt_in, _ = _reversal_batch(64, _gen())
    forced = model(src, lengths, tgt_in, teacher_forcing=1.0)[0]
    free = model(src, lengths, tgt_in, teacher_forcing=0.0)[0]
    torch.manual_seed(1)
    mixed = model(src, lengths, tgt_in, teacher_forcing=0.5)[0]
    like_forced = torch.isclose(mixed, forced).all(-1)[:, 1:]  # (B, T - 1) steps whose logits match each extreme
    like_free = torch.isclose(mixed, free).all(-1)[:, 1:]
    assert like_forced.any() and like_free.any() and not like_forced.all() and not like_free.all()
    torch.manual_seed(1)
    assert torch.equal(model(src, lengths, tgt_in, teacher_forcing=0.5)[0], mixed)  # reproducible from the seed
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="teacher_forcing"):
            model(src, lengths, tgt_in, teacher_forcing=bad)


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine the threads' waiting made
    this test several times slower; the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_seq2seq_learns_to_reverse_with_attention(one_thread):
    torch.manual_seed(0)
    gen = _gen(0)
    model = Seq2Seq(11, 11, hidden_size=32, embedding_dim=16, attention="additive")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        src, lengths, tgt_in, tgt_out = _reversal_batch(32, gen)
        logits, _ = model(src, lengths, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, 11), tgt_out.reshape(-1), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    src, lengths, _, tgt_out = _reversal_batch(200, _gen(1))
    tokens, weights = model.greedy_decode(src, lengths, max_len=tgt_out.size(1), bos_id=BOS, eos_id=EOS)
    correct = sum(
        tokens.size(1) > length and torch.equal(tokens[b, : length + 1], tgt_out[b, : length + 1])
        for b, length in enumerate(lengths.tolist())
    )
    assert correct / 200 > 0.8
    # Reversal: output step 0 should look mostly at the last real source token.
    last = weights[torch.arange(200), 0, lengths - 1]
    assert last.mean() > 0.5


@pytest.mark.parametrize("attention", ["additive", "dot", None])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_seq2seq_rnnlib_matches_torch(attention, cell):
    torch.manual_seed(0)
    theirs = Seq2Seq(11, 13, hidden_size=6, embedding_dim=4, attention=attention, cell=cell).double()
    ours = Seq2Seq(11, 13, hidden_size=6, embedding_dim=4, attention=attention, cell=cell, impl="rnnlib").double()
    ours.load_state_dict(theirs.state_dict())
    src, lengths, tgt_in, _ = _reversal_batch(4, _gen())
    (a, wa), (b, wb) = ours(src, lengths, tgt_in), theirs(src, lengths, tgt_in)
    assert torch.allclose(a, b)
    assert (wa is None and wb is None) or torch.allclose(wa, wb)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_causal_lm_rnnlib_matches_torch(cell):
    torch.manual_seed(0)
    theirs = CausalAttentionLM(7, hidden_size=6, cell=cell).double()
    ours = CausalAttentionLM(7, hidden_size=6, cell=cell, impl="rnnlib").double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randint(0, 7, (2, 5), generator=_gen())
    assert torch.allclose(ours(x)[0], theirs(x)[0])
