"""The explorers: importing rnnlib does not import ipywidgets; the widgets build and react."""
import subprocess
import sys

import pytest
import torch


def test_import_rnnlib_does_not_import_ipywidgets():
    code = "import sys, rnnlib, rnnlib.widgets, rnnlib.plots; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_gradient_explorer_redraws_on_change():
    pytest.importorskip("ipywidgets")
    from rnnlib.widgets import gradient_explorer

    box = gradient_explorer(hidden_size=8)
    (radius, length), toggle, out = box.children[0].children, box.children[1], box.children[2]
    assert "tanh, ρ(W_hh) = 1" in box.latest.axes[0].get_legend_handles_labels()[1][0]
    radius.value = 0.5
    toggle.value = "relu"
    assert "relu, ρ(W_hh) = 0.5" in box.latest.axes[0].get_legend_handles_labels()[1][0]


def test_gradient_grid_and_figure_titles_report_the_rate():
    from rnnlib.widgets import gradient_figure, gradient_grid

    fig = gradient_grid(radii=(0.5, 1.5), seq_len=10, hidden_size=8)
    assert [ax.get_title() for ax in fig.axes] == ["tanh RNN", "relu RNN"]
    assert len(fig.axes[0].lines) == 2
    fig = gradient_figure(0.5, 20, "tanh", hidden_size=8)
    assert "measured factor per step 0." in fig.axes[0].get_title()


def test_temperature_explorer_resamples():
    pytest.importorskip("ipywidgets")
    from rnnlib.models import CharLM
    from rnnlib.text import Vocab
    from rnnlib.widgets import temperature_explorer

    torch.manual_seed(0)
    vocab = Vocab.from_text("abc ")
    box = temperature_explorer(CharLM(len(vocab), hidden_size=8, cell="gru"), vocab, prompt="ab", length=20)
    slider, _ = box.children
    before = box.latest
    slider.value = 0.1
    assert box.latest != before and box.latest.startswith("ab") and len(box.latest) == 22
