"""The course's figure colours: distinct for readers with a colour-vision deficiency, visible on white,
and every figure on an opaque white background so that it reads on the book's dark theme too.

Colour-vision deficiencies are simulated with the matrices of Machado, Oliveira and Fernandes (2009,
severity 1.0, in linear RGB); distances are CIE76 Delta E in CIELAB.
"""
from __future__ import annotations

import io
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.collections import Collection
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.text import Text
from PIL import Image

from rnnlib import diagrams, plots
from rnnlib.plots import PALETTE

SIMULATIONS = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}
MIN_DELTA_E = 15.0      # clearly different at a glance; matplotlib's tab10 has pairs below 8 under protanopia
MIN_CONTRAST_ON_WHITE = 2.0  # WCAG contrast ratio; Okabe-Ito's yellow has 1.3
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def _linear(color) -> np.ndarray:
    c = np.asarray(to_rgba(color)[:3])
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb: np.ndarray) -> np.ndarray:
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear_rgb
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a, b, simulation: str | None = None) -> float:
    la, lb = _linear(a), _linear(b)
    if simulation is not None:
        m = np.asarray(SIMULATIONS[simulation])
        la, lb = np.clip(m @ la, 0, 1), np.clip(m @ lb, 0, 1)
    return float(np.linalg.norm(_lab(la) - _lab(lb)))


def contrast_on_white(color) -> float:
    luminance = float(np.dot([0.2126, 0.7152, 0.0722], _linear(color)))
    return 1.05 / (luminance + 0.05)


def closest_pair(palette, simulation):
    return min((delta_e(a, b, simulation), a, b) for a, b in itertools.combinations(palette, 2))


@pytest.mark.parametrize("simulation", [None, *SIMULATIONS])
def test_palette_colours_stay_apart_for_every_kind_of_colour_vision(simulation):
    distance, a, b = closest_pair(PALETTE, simulation)
    assert distance >= MIN_DELTA_E, f"{a} and {b} are {distance:.1f} apart under {simulation or 'normal vision'}"


def test_the_distance_check_rejects_matplotlibs_default_cycle():
    """The check above can fail: tab10 (matplotlib's default) confuses orange and green under protanopia."""
    distance, a, b = closest_pair(TAB10, "protanopia")
    assert distance < MIN_DELTA_E and {a, b} == {"#ff7f0e", "#2ca02c"}


def test_palette_colours_are_visible_on_white_and_yellow_is_left_out():
    weak = {c: round(contrast_on_white(c), 2) for c in PALETTE if contrast_on_white(c) < MIN_CONTRAST_ON_WHITE}
    assert not weak, f"too light to see as a line on white: {weak}"
    assert contrast_on_white("#F0E442") < MIN_CONTRAST_ON_WHITE  # Okabe-Ito's yellow, and why it is not here
    assert len(set(PALETTE)) == len(PALETTE)


def test_palette_starts_blue_orange_like_the_captions_say():
    """Captions name the first series 'blue' and the second 'orange' (as with matplotlib's default)."""
    r, g, b, _ = to_rgba(PALETTE[0])
    assert b > max(r, g)
    r, g, b, _ = to_rgba(PALETTE[1])
    assert r > g > b


@pytest.mark.parametrize("shape", [(1, 1), (2, 3)])
def test_new_figure_has_an_opaque_white_background_and_the_palette_as_its_cycle(shape):
    fig, axes = plots.new_figure(*shape)
    assert to_rgba(fig.get_facecolor()) == (1.0, 1.0, 1.0, 1.0)
    for ax in np.atleast_1d(axes).flat:
        drawn = [ax.plot([0, 1], [0, k])[0].get_color() for k in range(len(PALETTE) + 1)]
        assert [to_rgba(c) for c in drawn] == [to_rgba(c) for c in (*PALETTE, PALETTE[0])]


def _history():
    steps = list(range(1, 41))
    return SimpleNamespace(step=steps, train_loss=[2.0 - 0.02 * s for s in steps], val_step=[10, 20, 30, 40],
                           val_loss=[1.9, 1.6, 1.4, 1.3], seconds_per_step=0.01)


FIGURES = {
    "plot_lines": lambda: plots.plot_lines({f"run {k}": [k, k + 1, k + 3] for k in range(4)}, hline=(1.0, "ref")),
    "plot_history": lambda: plots.plot_history(_history()),
    "plot_runs": lambda: plots.plot_runs({"a": _history(), "b": _history()}),
    "plot_forecast": lambda: plots.plot_forecast([0, 1, 0, 1], {"model": [0, 0.9, 0.1, 1]}),
    "plot_histogram": lambda: plots.plot_histogram({"a": [1, 2, 2, 3], "b": [2, 3, 3, 4]}, vlines={"mean": 2.5}),
    "plot_lr_range": lambda: plots.plot_lr_range({"a": ([1e-4, 1e-3, 1e-2], [2.0, 1.5, 3.0])}, marks={"a": 1e-3}),
    "plot_seed_comparison": lambda: plots.plot_seed_comparison({"GRU": [1, 2], "LSTM": [2, 3]}),
    "plot_heatmap": lambda: plots.plot_heatmap(np.eye(3), annotate=True),
    "plot_lstm_cell": diagrams.plot_lstm_cell,
    "plot_gru_cell": diagrams.plot_gru_cell,
    "plot_timeline": lambda: diagrams.plot_timeline([(1997, "LSTM"), (2014, "GRU")]),
    "plot_unrolled_rnn": diagrams.plot_unrolled_rnn,
    "plot_deep_rnn_diagram": diagrams.plot_deep_rnn_diagram,
    "plot_bidirectional_diagram": diagrams.plot_bidirectional_diagram,
}


def _saturated_colours(fig) -> set[str]:
    """Colours of lines, markers, text, arrows and scatter points that are not a grey or a pale tint."""
    found = []
    for artist in fig.findobj():
        if isinstance(artist, Line2D):
            found += [artist.get_color(), artist.get_markerfacecolor()]
        elif isinstance(artist, Text) and artist.get_text():
            found.append(artist.get_color())
        elif isinstance(artist, FancyArrowPatch):
            found.append(artist.get_edgecolor())
        elif isinstance(artist, Collection) and artist.get_array() is None:  # not a colour-mapped image
            found += list(artist.get_facecolors()) + list(artist.get_edgecolors())
    out = set()
    for colour in found:
        if isinstance(colour, str) and colour == "none":
            continue
        r, g, b, a = to_rgba(colour)
        if a > 0 and max(r, g, b) - min(r, g, b) > 0.35:  # chroma: greys and pastel fills are below
            out.add("#{:02X}{:02X}{:02X}".format(*(round(255 * v) for v in (r, g, b))))
    return out


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_draws_in_palette_colours_on_an_opaque_white_background(name):
    fig = FIGURES[name]()
    off_palette = _saturated_colours(fig) - set(PALETTE)
    assert not off_palette, f"{name}: colours outside rnnlib.plots.PALETTE: {sorted(off_palette)}"
    # rendered as a notebook renders it (IPython passes the figure's own facecolor to savefig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40, facecolor=fig.get_facecolor(), bbox_inches="tight")
    image = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGBA"))
    assert image[..., 3].min() == 255, f"{name}: the PNG has transparent pixels (unreadable on a dark page)"
    assert (image[0, 0, :3] == 255).all(), f"{name}: the background is not white"


def test_the_colour_check_finds_an_off_palette_colour():
    fig, ax = plots.new_figure()
    ax.plot([0, 1], [0, 1], color="tab:green")
    ax.text(0, 0, "label", color="tab:red")
    assert _saturated_colours(fig) == {"#2CA02C", "#D62728"}
