"""rnnlib.scan: the scans against the loop (float64 values and gradients), extremes, depth and work, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnlib.scan import combine, count_ops, linear_recurrence, log_scan, scan_doubling, scan_tree

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-10}
SCANS = {"doubling": scan_doubling, "tree": scan_tree}


def _coefficients(shape, gen, extreme=False, dtype=F64):
    """Positive a (in (0, 1)) and b as a minGRU makes them: a = 1 - z, b = z * g, from logits k and c.

    With ``extreme`` a third of the gates is near 0 (k = +30, a ~ 1e-13), a third near 1 (k = -30,
    1 - a ~ 1e-13) and the rest moderate. Returns the leaves k, c and (log_a, log_b) computed from them.
    """
    k = torch.randn(shape, generator=gen, dtype=dtype) * 2
    if extreme:
        pick = torch.randint(0, 3, shape, generator=gen)
        k = torch.where(pick == 0, torch.full_like(k, 30.0), torch.where(pick == 1, torch.full_like(k, -30.0), k))
    c = torch.rand(shape, generator=gen, dtype=dtype) + 0.1
    return k.requires_grad_(), c.requires_grad_()


def _log_ab(k, c):
    return -F.softplus(k), -F.softplus(-k) + torch.log(c)


def _ab(k, c):
    return torch.sigmoid(-k), torch.sigmoid(k) * c


def _values_and_grads(h, leaves, gen):
    weights = torch.randn(h.shape, generator=gen, dtype=h.dtype)
    grads = torch.autograd.grad((h * weights).sum(), leaves, allow_unused=True)  # a_1 is unused when h0 = 0
    return h.detach(), [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


@pytest.mark.parametrize("shape,dim", [((7, 3), 0), ((2, 13, 4), -2), ((2, 13, 4), 1), ((5, 2, 3), 0),
                                       ((3, 2, 16, 2), 2), ((1, 1, 1), 1), ((4, 31), -1)])
@pytest.mark.parametrize("name", list(SCANS))
@pytest.mark.parametrize("with_h0", [False, True])
def test_scans_equal_the_loop_in_values_and_gradients(shape, dim, name, with_h0):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(shape, generator=gen, dtype=F64).requires_grad_()  # any sign: the scans are exact reorderings
    b = torch.randn(shape, generator=gen, dtype=F64).requires_grad_()
    step_shape = shape[: dim % len(shape)] + shape[dim % len(shape) + 1:]
    h0 = torch.randn(step_shape, generator=gen, dtype=F64).requires_grad_() if with_h0 else None
    leaves = [a, b] + ([h0] if with_h0 else [])
    want, want_grads = _values_and_grads(linear_recurrence(a, b, h0, dim=dim), leaves, torch.Generator().manual_seed(1))
    got, got_grads = _values_and_grads(SCANS[name](a, b, h0, dim=dim), leaves, torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want, **TOL)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 63, 64, 65, 1000])
def test_every_length_including_odd_and_non_powers_of_two(T):
    gen = torch.Generator().manual_seed(T)
    a, b = torch.rand(2, T, 3, generator=gen, dtype=F64), torch.randn(2, T, 3, generator=gen, dtype=F64)
    want = linear_recurrence(a, b)
    for scan in SCANS.values():
        torch.testing.assert_close(scan(a, b), want, **TOL)
    torch.testing.assert_close(log_scan(a.log(), (b.abs() + 0.1).log()), linear_recurrence(a, b.abs() + 0.1), **TOL)


def test_the_loop_is_the_recurrence_written_out():
    a = torch.tensor([[0.5], [2.0], [0.25]], dtype=F64)
    b = torch.tensor([[1.0], [-1.0], [4.0]], dtype=F64)
    h0 = torch.tensor([2.0], dtype=F64)
    # h1 = 0.5 * 2 + 1 = 2; h2 = 2 * 2 - 1 = 3; h3 = 0.25 * 3 + 4 = 4.75
    assert linear_recurrence(a, b, h0, dim=0).flatten().tolist() == [2.0, 3.0, 4.75]


def test_combine_is_associative_and_has_an_identity():
    gen = torch.Generator().manual_seed(3)
    x, y, z = [(torch.randn(5, generator=gen, dtype=F64), torch.randn(5, generator=gen, dtype=F64)) for _ in range(3)]
    left, right = combine(combine(x, y), z), combine(x, combine(y, z))
    for l, r in zip(left, right):
        torch.testing.assert_close(l, r, **TOL)
    identity = (torch.ones(5, dtype=F64), torch.zeros(5, dtype=F64))
    for l, r in zip(combine(identity, x), x):
        assert torch.equal(l, r)
    # not commutative: the order of the steps matters
    assert not torch.allclose(combine(x, y)[1], combine(y, x)[1])


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("T", [1, 17, 500])
def test_log_scan_equals_the_loop_in_values_and_gradients(T, extreme, with_h0):
    gen = torch.Generator().manual_seed(T)
    k, c = _coefficients((3, T, 4), gen, extreme)
    h0 = (torch.randn(3, 4, generator=gen, dtype=F64) * 2).requires_grad_() if with_h0 else None  # any sign
    leaves = [k, c] + ([h0] if with_h0 else [])
    want, want_grads = _values_and_grads(linear_recurrence(*_ab(k, c), h0), leaves, torch.Generator().manual_seed(1))
    got, got_grads = _values_and_grads(log_scan(*_log_ab(k, c), h0), leaves, torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want, **TOL)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, **TOL)


def test_ten_thousand_steps_with_gates_near_0_and_1_float64():
    """T = 10^4, gates near 0 and 1: the scans equal the loop to 1e-10, values and gradients."""
    gen = torch.Generator().manual_seed(7)
    k, c = _coefficients((2, 10_000, 3), gen, extreme=True)
    h0 = torch.randn(2, 3, generator=gen, dtype=F64).requires_grad_()
    leaves = [k, c, h0]
    want, want_grads = _values_and_grads(linear_recurrence(*_ab(k, c), h0), leaves, torch.Generator().manual_seed(1))
    for name, run in {"log, chunks of 64": lambda: log_scan(*_log_ab(k, c), h0, chunk_size=64),
                      "log, chunks of 1000": lambda: log_scan(*_log_ab(k, c), h0, chunk_size=1000),
                      "doubling": lambda: scan_doubling(*_ab(k, c), h0),
                      "tree": lambda: scan_tree(*_ab(k, c), h0)}.items():
        got, got_grads = _values_and_grads(run(), leaves, torch.Generator().manual_seed(1))
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got, want, **TOL, msg=name)
        for g, w in zip(got_grads, want_grads):
            assert torch.isfinite(g).all(), name
            torch.testing.assert_close(g, w, **TOL, msg=name)


def test_unchunked_log_scan_at_ten_thousand_steps_loses_digits_to_cancellation():
    """Without chunks |sum log a| reaches 10^5 here: values still agree to 1e-10, gradients only to ~1e-9."""
    gen = torch.Generator().manual_seed(7)
    k, c = _coefficients((2, 10_000, 3), gen, extreme=True)
    leaves = [k, c]
    want, want_grads = _values_and_grads(linear_recurrence(*_ab(k, c)), leaves, torch.Generator().manual_seed(1))
    got, got_grads = _values_and_grads(log_scan(*_log_ab(k, c)), leaves, torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want, **TOL)
    worst = max((g - w).abs().max().item() for g, w in zip(got_grads, want_grads))
    assert 1e-12 < worst < 1e-7   # finite, no NaN, but far more than the chunked scan's ~1e-12


@pytest.mark.parametrize("T,C", [(10, 3), (64, 16), (65, 16), (7, 1), (5, 5), (5, 100)])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_chunked_log_scan_equals_the_loop(T, C, dim):
    gen = torch.Generator().manual_seed(T * C)
    shape = [2, 3, 4]
    shape[dim] = T
    k, c = _coefficients(tuple(shape), gen, extreme=True)
    step_shape = tuple(s for i, s in enumerate(shape) if i != dim % 3)
    h0 = torch.randn(step_shape, generator=gen, dtype=F64).requires_grad_()
    leaves = [k, c, h0]
    want, want_grads = _values_and_grads(linear_recurrence(*_ab(k, c), h0, dim=dim), leaves,
                                         torch.Generator().manual_seed(1))
    got, got_grads = _values_and_grads(log_scan(*_log_ab(k, c), h0, dim=dim, chunk_size=C), leaves,
                                       torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, want, **TOL)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, **TOL)


def test_float32_stays_finite_and_close_at_ten_thousand_steps():
    """No overflow, underflow to NaN or inf in float32; the error is that of float32 rounding."""
    gen = torch.Generator().manual_seed(8)
    k64, c64 = _coefficients((2, 10_000, 3), gen, extreme=True)
    want = linear_recurrence(*_ab(k64, c64)).detach()
    k, c = k64.detach().float().requires_grad_(), c64.detach().float().requires_grad_()
    limits = {"log, plain": 0.05, "log, chunks of 64": 1e-3, "tree": 1e-4, "doubling": 1e-4, "loop": 1e-4}
    for name, h in {"log, plain": log_scan(*_log_ab(k, c)), "log, chunks of 64": log_scan(*_log_ab(k, c), chunk_size=64),
                    "tree": scan_tree(*_ab(k, c)), "doubling": scan_doubling(*_ab(k, c)),
                    "loop": linear_recurrence(*_ab(k, c))}.items():
        assert torch.isfinite(h).all(), name
        grads = torch.autograd.grad(h.sum(), [k, c])
        assert all(torch.isfinite(g).all() for g in grads), name
        rel = ((h.double() - want).abs() / want.abs().clamp_min(1e-3)).max().item()
        assert rel < limits[name], (name, rel)  # float32 has 7 digits; the plain log scan loses some to cancellation


def test_log_scan_has_the_cancellation_error_the_chapter_measures():
    """Float32: the plain log scan's error grows with |sum log a| (cancellation); chunks keep it small."""
    gen = torch.Generator().manual_seed(9)
    T = 4096
    log_a = torch.full((1, T, 64), -3.0, dtype=F64)       # a = e^-3 at every step: sum log a = -3t
    b = torch.rand(1, T, 64, generator=gen, dtype=F64) + 0.5
    want = linear_recurrence(log_a.exp(), b)

    def error(h):
        return ((h.double() - want).abs() / want).max().item()

    plain = error(log_scan(log_a.float(), b.log().float()))
    chunked = error(log_scan(log_a.float(), b.log().float(), chunk_size=64))
    tree = error(scan_tree(log_a.exp().float(), b.float()))
    assert plain > 30 * chunked and plain > 30 * tree
    assert plain < 0.05 and chunked < 1e-4 and tree < 1e-5


def test_gradcheck_of_the_log_scan():
    gen = torch.Generator().manual_seed(4)
    log_a = (-torch.rand(2, 6, 2, generator=gen, dtype=F64) * 3).requires_grad_()
    log_b = torch.randn(2, 6, 2, generator=gen, dtype=F64).requires_grad_()
    h0 = torch.randn(2, 2, generator=gen, dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(lambda la, lb, h: log_scan(la, lb, h), (log_a, log_b, h0))


def test_log_scan_accepts_b_equal_to_zero():
    log_a = torch.log(torch.full((5, 1), 0.5, dtype=F64))
    log_b = torch.log(torch.tensor([[0.0], [1.0], [0.0], [2.0], [0.0]], dtype=F64))  # -inf where b = 0
    want = linear_recurrence(log_a.exp(), log_b.exp(), dim=0)
    torch.testing.assert_close(log_scan(log_a, log_b, dim=0), want, **TOL)


def test_operator_counts_grow_like_T_for_the_loop_and_like_log_T_for_the_scans():
    def calls(fn, T, log=False):
        a, b = torch.rand(1, T, 2) + 0.1, torch.rand(1, T, 2) + 0.1
        args = (a.log(), b.log()) if log else (a, b)
        return count_ops(fn, *args)[1].calls

    loop = [calls(linear_recurrence, T) for T in (64, 128, 256)]
    assert loop[1] - loop[0] == 128 and loop[2] - loop[1] == 256  # two operators per step
    for scan in (scan_doubling, scan_tree):
        c = [calls(scan, T) for T in (64, 128, 256, 512)]
        steps = {c[i + 1] - c[i] for i in range(3)}
        assert len(steps) == 1 and 0 < steps.pop() <= 12  # a fixed number more per doubling of T
    assert len({calls(log_scan, T, log=True) for T in (64, 512, 4096)}) == 1  # constant


def test_operator_counts_measure_work():
    a, b = torch.rand(1, 1024, 1), torch.rand(1, 1024, 1)
    work = {f.__name__: count_ops(f, a, b)[1].elements for f in (linear_recurrence, scan_doubling, scan_tree)}
    assert work["scan_doubling"] > 3 * work["scan_tree"]          # T log T against T
    assert work["scan_tree"] < 6 * work["linear_recurrence"]       # both O(T)


def test_count_ops_returns_the_result():
    a, b = torch.rand(4, 2), torch.rand(4, 2)
    result, count = count_ops(linear_recurrence, a, b, dim=0)
    assert torch.equal(result, linear_recurrence(a, b, dim=0)) and count.calls > 0


@pytest.mark.parametrize("fn", [linear_recurrence, scan_doubling, scan_tree, log_scan])
def test_errors_say_what_to_do(fn):
    a = torch.rand(2, 5, 3)
    with pytest.raises(ValueError, match="same shape"):
        fn(a, torch.rand(2, 4, 3))
    with pytest.raises(ValueError, match="shape of one time step"):
        fn(a, a, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="empty"):
        fn(torch.rand(2, 0, 3), torch.rand(2, 0, 3))
    with pytest.raises(ValueError, match="floating-point"):
        fn(torch.ones(2, 5, 3, dtype=torch.long), torch.ones(2, 5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        fn(a, a, dim=3)
    with pytest.raises(TypeError, match="tensor"):
        fn([1.0, 2.0], a)


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk_size"):
        log_scan(torch.zeros(5, 2), torch.zeros(5, 2), dim=0, chunk_size=0)


def test_log_scan_refuses_log_a_of_zero_with_the_stable_formula():
    log_a = torch.zeros(4, 2)
    log_a[2, 1] = -math.inf   # a = 0, e.g. log(1 - sigmoid(40.0)) in float32
    with pytest.raises(ValueError, match="softplus"):
        log_scan(log_a, torch.zeros(4, 2), dim=0)


def test_h0_broadcasts_through_the_scans_like_the_loop():
    a, b = torch.rand(3, 6, 2, dtype=F64), torch.rand(3, 6, 2, dtype=F64)
    h0 = torch.rand(3, 2, dtype=F64)
    want = linear_recurrence(a, b, h0)
    torch.testing.assert_close(log_scan(a.log(), b.log(), h0), want, **TOL)
    torch.testing.assert_close(log_scan(a.log(), b.log(), h0, chunk_size=4), want, **TOL)
    # with h0 = 0 the result does not depend on whether h0 is given
    torch.testing.assert_close(scan_tree(a, b, torch.zeros_like(h0)), scan_tree(a, b), **TOL)


@pytest.mark.parametrize("kind", ["doubling", "tree"])
@pytest.mark.parametrize("T", list(range(1, 34)) + [64, 100])
def test_scan_pattern_computes_every_prefix(kind, T):
    """Simulate the drawn rounds on intervals: each position must end up covering steps 0..t."""
    from rnnlib.scan import scan_pattern

    rounds = scan_pattern(kind, T)
    cover = [(t, t) for t in range(T)]                            # the steps each position has composed
    for pairs in rounds:
        dsts = [d for _, d in pairs]
        assert len(set(dsts)) == len(dsts)                         # one combine per position per round
        new = list(cover)
        for src, dst in pairs:
            assert cover[src][1] + 1 == cover[dst][0]               # adjacent, earlier first
            new[dst] = (cover[src][0], cover[dst][1])
        cover = new
    assert cover == [(0, t) for t in range(T)]
    depth, work = len(rounds), sum(len(p) for p in rounds)
    log = math.ceil(math.log2(T)) if T > 1 else 0
    if kind == "doubling":
        assert depth == log and work == sum(T - 2 ** r for r in range(log))
    else:
        assert depth <= max(0, 2 * log - 1) and work <= 2 * T


def test_plot_scan_pattern_draws_every_combine():
    from rnnlib.plots import plot_scan_pattern
    from rnnlib.scan import scan_pattern

    rounds = scan_pattern("tree", 8)
    fig = plot_scan_pattern(rounds, 8, title="tree")
    ax = fig.axes[0]
    assert ax.get_title() == "tree"
    assert len([c for c in ax.texts if c.arrow_patch is not None]) == sum(len(r) for r in rounds)
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "input"
    with pytest.raises(ValueError, match="kind"):
        scan_pattern("blelloch", 8)
