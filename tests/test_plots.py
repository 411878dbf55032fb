"""The data plots of rnnlib.plots: each returns a Figure that shows what its docstring promises."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from rnnlib.plots import plot_attention, plot_confusion, plot_gates, plot_grad_norms, plot_history, smooth
from rnnlib.train import History


def tick_texts(labels) -> list[str]:
    return [t.get_text() for t in labels]


def test_history_plot_draws_training_and_validation_curves():
    h = History(step=[1, 2, 3, 4], train_loss=[4.0, 3.0, 2.5, 2.0], val_step=[2, 4], val_loss=[3.1, 2.2])
    fig = plot_history(h, title="run", ylabel="loss (nats/char)")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("run", "optimizer step", "loss (nats/char)")
    raw, smoothed, val = ([list(line.get_xdata()), list(line.get_ydata())] for line in ax.get_lines())
    assert raw == [[1, 2, 3, 4], [4.0, 3.0, 2.5, 2.0]]
    assert smoothed[1] == pytest.approx(list(smooth(raw[1])))
    assert val == [[2, 4], [3.1, 2.2]]
    assert sorted(tick_texts(ax.get_legend().get_texts())) == ["training (smoothed)", "validation"]


def test_smoothing_is_a_bias_corrected_moving_average():
    assert smooth([2.0])[0] == pytest.approx(2.0)  # no pull towards zero at the start
    assert smooth([1.0] * 50) == pytest.approx(np.ones(50))


def test_grad_norms_on_a_log_scale_one_line_per_run():
    fig = plot_grad_norms({"tanh": [1.0, 0.5, 0.25], "relu": torch.tensor([1.0, 0.1, 0.01])})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[0, 1, 2], [0, 1, 2]]
    assert tick_texts(ax.get_legend().get_texts()) == ["tanh", "relu"]


def test_attention_heatmap_puts_outputs_on_rows_and_inputs_on_columns():
    weights = torch.softmax(torch.randn(3, 5), dim=-1)
    fig = plot_attention(weights, list("ab cd"), list("xyz"))
    ax = fig.axes[0]
    assert tick_texts(ax.get_xticklabels()) == ["a", "b", "␣", "c", "d"]  # a space is made visible
    assert tick_texts(ax.get_yticklabels()) == ["x", "y", "z"]
    np.testing.assert_allclose(ax.images[0].get_array(), weights.numpy())
    with pytest.raises(ValueError, match="labels for"):
        plot_attention(weights, list("abc"), list("xyz"))


def test_gate_heatmaps_one_panel_per_gate_with_characters_on_the_x_axis():
    T, H = 6, 4
    acts = {"I": torch.rand(T, H), "C": torch.randn(T, H)}
    fig = plot_gates(acts, list("to be\n"), units=[0, 2])
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2
    assert panels[0].images[0].get_array().shape == (2, T)  # selected units down, time along
    assert tick_texts(panels[-1].get_xticklabels()) == ["t", "o", "␣", "b", "e", "↵"]
    with pytest.raises(ValueError, match="5 characters"):
        plot_gates(acts, list("to be"))


def test_confusion_rows_are_recall_when_normalized():
    fig = plot_confusion(np.array([[3, 1], [0, 2]]), ["English", "Irish"])
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(shown.sum(axis=1), [1.0, 1.0])
