"""Synthetic tasks: their invariants, and that they depend only on the seed."""
import datetime as dt
import re

import pytest
import torch

from rnnlib.synthetic import (ADDING_BASELINE_MSE, adding_problem, date_fields, date_vocabs, encode_dates,
                              random_dates, sine_wave, sliding_windows)


def test_adding_problem_baseline_is_one_sixth():
    X, y = adding_problem(200_000, seq_len=20, seed=1)
    assert X.shape == (200_000, 20, 2) and y.shape == (200_000,)
    assert abs(float(((y - 1.0) ** 2).mean()) - ADDING_BASELINE_MSE) < 0.003


def test_adding_problem_markers_one_per_half_and_target_is_their_sum():
    X, y = adding_problem(500, seq_len=30, seed=2)
    markers = X[..., 1]
    assert torch.all(markers[:, :15].sum(1) == 1) and torch.all(markers[:, 15:].sum(1) == 1)
    assert torch.allclose((X[..., 0] * markers).sum(1), y)


def test_same_seed_same_data():
    assert torch.equal(adding_problem(10, 8, seed=3)[0], adding_problem(10, 8, seed=3)[0])
    assert not torch.equal(adding_problem(10, 8, seed=3)[0], adding_problem(10, 8, seed=4)[0])
    assert torch.equal(sine_wave(100, seed=5), sine_wave(100, seed=5))


def test_sliding_windows():
    series = torch.arange(10.0)
    X, Y = sliding_windows(series, window=3, horizon=2)
    assert X.shape == (6, 3, 1) and Y.shape == (6, 2)
    assert X[2, :, 0].tolist() == [2, 3, 4] and Y[2].tolist() == [5, 6]
    with pytest.raises(ValueError, match="too short"):
        sliding_windows(series, window=9, horizon=2)


MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def _parse(human: str) -> dt.date:
    """An independent reader of the human formats: year, month (name or number) and day."""
    text = human.lower()
    year = int(re.search(r"\b(\d{4})\b", text).group(1))
    named = [k for k, m in enumerate(MONTHS, 1) if re.search(rf"\b{m}", text)]
    numbers = [int(n) for n in re.findall(r"\d+", text) if len(n) != 4]
    if named:
        month, day = named[0], numbers[0]
    elif "/" in text:  # YYYY/MM/DD
        month, day = numbers
    else:  # DD.MM.YYYY
        day, month = numbers
    return dt.date(year, month, day)


def test_date_pairs_parse_and_agree():
    pairs = random_dates(3000, seed=0)
    src, tgt = date_vocabs()
    for human, iso in pairs:
        assert _parse(human) == dt.date.fromisoformat(iso), human
        src.encode(human), tgt.encode(iso)  # every character is in the fixed vocabularies
    assert len({h for h, _ in pairs}) > 2900 and len({len(h) for h, _ in pairs}) > 10


def test_date_fields_locate_year_month_and_day():
    full_names = [m.lower() for m in ["January", "February", "March", "April", "May", "June", "July", "August",
                                      "September", "October", "November", "December"]]
    for human, iso in random_dates(3000, seed=2):
        date = dt.date.fromisoformat(iso)
        fields = {name: human[start:end] for name, (start, end) in date_fields(human).items()}
        assert fields["year"] == f"{date.year}", human
        assert fields["day"].isdigit() and int(fields["day"]) == date.day, human
        month = fields["month"].lower()
        assert (int(month) == date.month) if month.isdigit() else month in (
            full_names[date.month - 1], full_names[date.month - 1][:3]), human
    assert date_fields("the 3rd of March 1994") == {"year": (17, 21), "month": (11, 16), "day": (4, 5)}
    assert date_fields("1994/03/08") == {"year": (0, 4), "month": (5, 7), "day": (8, 10)}
    with pytest.raises(ValueError, match="not a date"):
        date_fields("tomorrow")


def test_encode_dates_teacher_forcing_layout():
    src_v, tgt_v = date_vocabs()
    batch = encode_dates(random_dates(5, seed=1), src_v, tgt_v)
    assert batch["tgt_in"][:, 0].eq(tgt_v.stoi["<bos>"]).all()
    assert batch["tgt_out"][:, -1].eq(tgt_v.stoi["<eos>"]).all()
    assert torch.equal(batch["tgt_in"][:, 1:], batch["tgt_out"][:, :-1])
    assert batch["src"].shape == (5, int(batch["src_lengths"].max()))
