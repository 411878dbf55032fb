"""Synthetic sequence tasks, generated from a seed: a noisy sine wave, the adding problem, dates to ISO.

* **Noisy sine** and :func:`sliding_windows`: forecasting the next value from a window of past values.
* **Adding problem** (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015): each step carries a
  value in [0, 1) and a marker; exactly two steps are marked, one in each half of the sequence, and the
  target is the sum of the two marked values. Always predicting 1 (the mean of the sum) gives the
  baseline mean squared error Var(u1 + u2) = 2/12 = 1/6; a model must remember a value across up to
  ``seq_len`` steps to beat it.
* **Dates**: human-written dates in many formats ("the 3rd of March 1994", "03.03.1994", "Mar 3 1994", ...)
  paired with their ISO 8601 form ("1994-03-03"): a sequence-to-sequence task with a clear alignment
  between input and output characters, for attention.
"""
from __future__ import annotations

import datetime as _dt
import math
import random
import re

import torch

from .text import Vocab

ADDING_BASELINE_MSE = 1.0 / 6.0


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    g = torch.Generator()
    g.manual_seed(0 if seed is None else seed)
    return g


def sine_wave(n_steps: int, period: float = 40.0, noise: float = 0.1, seed: int = 0) -> torch.Tensor:
    """``sin(2 pi t / period)`` for ``t = 0 .. n_steps - 1`` plus Gaussian noise of std ``noise``; shape (n_steps,)."""
    if n_steps < 2 or period <= 0 or noise < 0:
        raise ValueError(f"need n_steps >= 2, period > 0, noise >= 0; got {n_steps}, {period}, {noise}")
    g = _generator(seed, None)
    t = torch.arange(n_steps, dtype=torch.float32)
    return torch.sin(2 * math.pi * t / period) + noise * torch.randn(n_steps, generator=g)


def sliding_windows(series: torch.Tensor, window: int, horizon: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a 1-D series into overlapping windows and the values that follow them.

    Returns ``X`` of shape (N, window, 1), ready for a ``batch_first`` recurrent layer that reads the
    window one step at a time, and ``Y`` of shape (N, horizon): ``Y[n, k] = series[n + window + k]``.
    """
    series = torch.as_tensor(series)
    if series.dim() != 1:
        raise ValueError(f"expected a 1-D series, got shape {tuple(series.shape)}")
    if window < 1 or horizon < 1:
        raise ValueError(f"window and horizon must be positive, got {window} and {horizon}")
    n = len(series) - window - horizon + 1
    if n < 1:
        raise ValueError(
            f"a series of length {len(series)} is too short for window={window} and horizon={horizon} "
            f"(needs at least {window + horizon} values)"
        )
    frames = series.unfold(0, window + horizon, 1)  # (N, window + horizon)
    return frames[:, :window].unsqueeze(-1).clone(), frames[:, window:].clone()


def adding_problem(
    n: int, seq_len: int, seed: int | None = 0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences of the adding problem: ``X`` (n, seq_len, 2) = (value, marker), ``y`` (n,).

    One marked step is drawn uniformly from the first half, the other from the second half.
    """
    if n < 1 or seq_len < 2:
        raise ValueError(f"need n >= 1 and seq_len >= 2, got n={n}, seq_len={seq_len}")
    g = _generator(seed, generator)
    values = torch.rand(n, seq_len, generator=g)
    half = seq_len // 2
    first = torch.randint(0, half, (n,), generator=g)
    second = torch.randint(half, seq_len, (n,), generator=g)
    markers = torch.zeros(n, seq_len)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return torch.stack([values, markers], dim=-1), y


_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Each format is unambiguous: a numeric day/month order is only used with a separator that fixes it.
_DATE_FORMATS = [
    lambda d: f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {_MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"{_MONTHS[d.month - 1][:3]} {d.day} {d.year}",
    lambda d: f"{_DAYS[d.weekday()]}, {d.day} {_MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{_DAYS[d.weekday()][:3]} {d.day} {_MONTHS[d.month - 1][:3]} {d.year}",
    lambda d: f"the {_ordinal(d.day)} of {_MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    lambda d: f"{_MONTHS[d.month - 1].upper()} {d.day} {d.year}",
    lambda d: f"{d.day} {_MONTHS[d.month - 1].lower()} {d.year}",
    lambda d: f"{_MONTHS[d.month - 1][:3].lower()} {_ordinal(d.day)}, {d.year}",
]
DATE_SPECIALS = ("<pad>", "<bos>", "<eos>")


def random_dates(n: int, seed: int = 0, start_year: int = 1950, end_year: int = 2049) -> list[tuple[str, str]]:
    """``n`` pairs ``(human-written date, ISO 8601 date)``, e.g. ``("Tue 8 Mar 1994", "1994-03-08")``."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    rng = random.Random(seed)
    first = _dt.date(start_year, 1, 1).toordinal()
    last = _dt.date(end_year, 12, 31).toordinal()
    pairs = []
    for _ in range(n):
        day = _dt.date.fromordinal(rng.randint(first, last))
        fmt = rng.choice(_DATE_FORMATS)
        pairs.append((fmt(day), day.isoformat()))
    return pairs


_MONTH_WORD = re.compile(r"\b(?:" + "|".join(m[:3] for m in _MONTHS) + r")[a-z]*", re.IGNORECASE)


def date_fields(human: str) -> dict[str, tuple[int, int]]:
    """Where the year, month and day of a date written by :func:`random_dates` sit in it.

    Returns ``{"year": (start, end), "month": (start, end), "day": (start, end)}``, character spans as in
    ``human[start:end]``: the month as a number or a (possibly abbreviated) name, the day's digits without
    an ordinal suffix. ``date_fields("the 3rd of March 1994")`` is
    ``{"year": (17, 21), "month": (11, 16), "day": (4, 5)}``.
    """
    numeric = re.fullmatch(r"(\d\d)\.(\d\d)\.(\d{4})|(\d{4})/(\d\d)/(\d\d)", human)
    if numeric:
        groups = ("day", "month", "year") if numeric.group(1) else (None, None, None, "year", "month", "day")
        return {name: numeric.span(k) for k, name in enumerate(groups, start=1) if name}
    year = re.search(r"\d{4}", human)
    month = _MONTH_WORD.search(human)
    day = re.search(r"(?<!\d)\d{1,2}(?!\d)", human)
    if not (year and month and day):
        raise ValueError(f"not a date in one of the formats of random_dates: {human!r}")
    return {"year": year.span(), "month": month.span(), "day": day.span()}


def date_vocabs() -> tuple[Vocab, Vocab]:
    """Source and target character vocabularies for :func:`random_dates`, ``<pad>`` = 0, ``<bos>``, ``<eos>``.

    Built from every character any format can produce, so they do not depend on the sample drawn.
    """
    sample = " ,./0123456789" + "".join(_MONTHS) + "".join(_DAYS) + "stndrdthof"
    source = set(sample) | set(sample.upper()) | set(sample.lower())
    return Vocab(source, DATE_SPECIALS), Vocab("0123456789-", DATE_SPECIALS)


def encode_dates(pairs, src_vocab: Vocab, tgt_vocab: Vocab) -> dict[str, torch.Tensor]:
    """Tensors for teacher forcing: ``src`` (B, S) padded, ``src_lengths`` (B,), ``tgt_in`` (B, T) starting
    with ``<bos>`` and ``tgt_out`` (B, T) ending with ``<eos>`` (all ISO dates have the same length)."""
    from .text import pad_sequences

    src, src_lengths = pad_sequences([src_vocab.encode(h) for h, _ in pairs], src_vocab.stoi["<pad>"])
    tgt = torch.stack([tgt_vocab.encode(iso) for _, iso in pairs])  # (B, 10)
    bos = torch.full((len(pairs), 1), tgt_vocab.stoi["<bos>"], dtype=torch.long)
    eos = torch.full((len(pairs), 1), tgt_vocab.stoi["<eos>"], dtype=torch.long)
    return {
        "src": src,
        "src_lengths": src_lengths,
        "tgt_in": torch.cat([bos, tgt], dim=1),
        "tgt_out": torch.cat([tgt, eos], dim=1),
    }
