"""Behaviour tests for the diagram figures of chapter 7.1: the history timeline and the unrolled RNN."""
import pytest
from matplotlib.figure import Figure

from rnnlib.diagrams import plot_timeline, plot_unrolled_rnn


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_timeline_labels_every_event_with_its_year_and_keeps_labels_apart():
    events = [(1997, "LSTM"), (1982, "Hopfield"), (1990, "Elman"), (1990, "BPTT"), (1991, "vanishing")]
    fig = plot_timeline(events, title="History")
    texts = _texts(fig)
    for year, label in events:
        assert f"{year}: {label}" in texts
    ax = fig.axes[0]
    assert ax.get_title() == "History" and ax.get_xlabel() == "year"
    # Two events in the same year must not sit on the same spot.
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (ax.texts[i].get_text(), ax.texts[j].get_text())


def test_timeline_rejects_no_events():
    with pytest.raises(ValueError, match="at least one"):
        plot_timeline([])


@pytest.mark.parametrize("steps", [1, 3])
def test_unrolled_rnn_draws_one_cell_per_step(steps):
    fig = plot_unrolled_rnn(steps=steps)
    texts = _texts(fig)
    for t in range(1, steps + 1):
        assert f"$X_{t}$" in texts and f"$H_{t}$" in texts and f"$O_{t}$" in texts
    assert f"$H_{steps + 1}$" not in texts
    assert "$H_0$" in texts and fig.axes[0].get_title()


def test_unrolled_rnn_rejects_zero_steps():
    with pytest.raises(ValueError, match="positive"):
        plot_unrolled_rnn(steps=0)
