"""Figures for the course. Every function takes data and returns a ``matplotlib.figure.Figure``.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot`` so that nothing is shown
twice or left open: a notebook displays the returned figure (it is the cell's value), a script saves it.
Models never plot; they return numbers, and these helpers draw them.
:class:`LivePlot` redraws one training-curve figure in place while a notebook trains.

Colours: every figure cycles through ``PALETTE``, the colour-blind-safe palette of Okabe and Ito
(2008), and has an opaque white background, so that it reads the same for readers with a colour-vision
deficiency and on the book's dark theme.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure


def _show_figures_as_png_in_notebooks() -> None:
    """Let IPython render a bare ``Figure`` (one returned by these helpers) as a PNG image.

    pyplot registers this formatter when it is imported in a kernel; these helpers do not use pyplot,
    so without this a notebook would show ``<Figure size 640x400 with 1 Axes>`` instead of the plot.
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "kernel"):
        select_figure_formats(shell, {"png"}, bbox_inches="tight")


_show_figures_as_png_in_notebooks()


# Okabe & Ito, "Color Universal Design" (2008): colours that stay distinct under protanopia, deuteranopia
# and tritanopia. Ordered like matplotlib's default cycle (blue, orange, green, red, purple, ...) so that a
# caption's "blue" and "orange" keep naming the first and second series; the palette's yellow (#F0E442)
# is left out, too light to see as a line on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY_BLUE, BLACK = PALETTE
FACECOLOR = "white"  # opaque, so a figure keeps its light background on a dark page


def palette_color(i: int) -> str:
    """The ``i``-th colour of ``PALETTE``, cycling (the course's ``"C{i}"``)."""
    return PALETTE[i % len(PALETTE)]


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.4, height: float = 4.0, **kw):
    """A Figure and its axes (like ``plt.subplots``, without pyplot's global state), with the course's
    colours: an opaque white background and ``PALETTE`` as every axes' colour cycle."""
    fig = Figure(figsize=(width, height), layout="constrained", facecolor=FACECOLOR)
    axes = fig.subplots(nrows, ncols, squeeze=True, **kw)
    for ax in np.atleast_1d(axes).flat:
        ax.set_prop_cycle(color=PALETTE)
    return fig, axes


def _figure_and_axes(ax=None, **size):
    """``(ax.figure, ax)`` when the caller passed axes to draw into, else a new Figure of ``size``."""
    if ax is not None:
        return ax.figure, ax
    return new_figure(**size)


def plot_lines(
    series: Mapping[str, Sequence[float]],
    x: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    logy: bool = False,
    hline: tuple[float, str] | None = None,
    ax=None,
    legend: bool | None = None,
    logx: bool = False,
) -> Figure:
    """One line per entry of ``series`` (label -> values), against ``x`` (shared or per label).

    A legend is drawn when there are several lines (or ``legend=True``).
    """
    fig, ax = _figure_and_axes(ax)
    for label, ys in series.items():
        ys = _as_numpy(ys)
        xs = x[label] if isinstance(x, Mapping) else x
        xs = np.arange(1, len(ys) + 1) if xs is None else _as_numpy(xs)
        ax.plot(xs, ys, label=label)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if legend or (legend is None and (len(series) > 1 or hline is not None)):
        ax.legend()
    ax.grid(alpha=0.3)
    return fig


def plot_history(history, title: str = "Training curves", ax=None, ylabel: str = "loss") -> Figure:
    """Training loss (per step, smoothed) and validation loss (per evaluation) of a :class:`~rnnlib.train.History`."""
    fig, ax = _figure_and_axes(ax)
    if history.train_loss:
        steps = np.asarray(history.step)
        loss = np.asarray(history.train_loss)
        ax.plot(steps, loss, color=BLUE, alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth(loss), color=BLUE, label="training (smoothed)")
    if history.val_loss:
        ax.plot(history.val_step, history.val_loss, "o-", color=ORANGE, label="validation")
    ax.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    if history.train_loss or history.val_loss:
        ax.legend()
    return fig


def smooth(values: Sequence[float], weight: float = 0.9) -> np.ndarray:
    """Exponential moving average with bias correction (the curve TensorBoard draws)."""
    out, avg = [], 0.0
    for k, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**k))
    return np.asarray(out)


def plot_grad_norms(
    norms: Mapping[str, Sequence[float]],
    title: str = "Gradient norm through time",
    xlabel: str = "distance from the loss (time steps)",
    ylabel: str = r"$\|\partial L / \partial H_t\|$",
    ax=None,
) -> Figure:
    """Gradient norms against distance from the loss, one line per run, on a log scale.

    ``norms[label][k]`` is the norm ``k`` steps before the loss (index 0 = the step of the loss).
    """
    series = {label: _as_numpy(v) for label, v in norms.items()}
    x = {label: np.arange(len(v)) for label, v in series.items()}
    return plot_lines(series, x=x, title=title, xlabel=xlabel, ylabel=ylabel, logy=True, ax=ax)


def plot_heatmap(
    matrix,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar_label: str = "",
    annotate: bool = False,
    ax=None,
) -> Figure:
    """A labelled heatmap; ``matrix[r, c]`` is drawn in row ``r`` (top to bottom), column ``c``."""
    m = _as_numpy(matrix)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {m.shape}")
    fig, ax = _figure_and_axes(ax, width=max(4.0, 0.28 * m.shape[1] + 2), height=max(3.0, 0.28 * m.shape[0] + 1.5))
    image = ax.imshow(m, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    for labels, n, set_ticks, set_labels in (
        (col_labels, m.shape[1], ax.set_xticks, ax.set_xticklabels),
        (row_labels, m.shape[0], ax.set_yticks, ax.set_yticklabels),
    ):
        if labels is not None:
            if len(labels) != n:
                raise ValueError(f"{len(labels)} labels for {n} rows/columns")
            set_ticks(range(n))
            set_labels([_visible(s) for s in labels], fontsize=8)
    if annotate:
        for r in range(m.shape[0]):
            for c in range(m.shape[1]):
                ax.text(c, r, f"{m[r, c]:.2g}", ha="center", va="center", fontsize=7, color="w")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    return fig


def _visible(token: str) -> str:
    """Make whitespace and special tokens readable as tick labels."""
    return {" ": "␣", "\n": "↵", "\t": "⇥", "$": r"\$"}.get(token, token)


def plot_attention(
    weights, src_tokens: Sequence[str], tgt_tokens: Sequence[str], title: str = "Attention weights", ax=None
) -> Figure:
    """Attention heatmap: output tokens down the rows, input tokens along the columns.

    ``weights`` has shape (len(tgt_tokens), len(src_tokens)); row ``t`` is the distribution the decoder
    used while producing output token ``t``.
    """
    return plot_heatmap(
        weights, tgt_tokens, src_tokens, title=title, xlabel="input character", ylabel="output character",
        cmap="Blues", vmin=0.0, vmax=1.0, colorbar_label="weight", ax=ax,
    )


def plot_gates(
    activations: Mapping[str, object],
    chars: Sequence[str],
    units: Sequence[int] | None = None,
    title: str = "Gate activations over a text sample",
) -> Figure:
    """One heatmap per gate (or state): ``activations[name]`` is (T, hidden); characters along the x axis."""
    names = list(activations)
    mats = {k: _as_numpy(v) for k, v in activations.items()}
    if units is not None:
        mats = {k: m[:, list(units)] for k, m in mats.items()}
    T = len(chars)
    fig, axes = new_figure(len(names), 1, width=max(6.0, 0.16 * T + 2), height=1.6 * len(names) + 0.8, sharex=True)
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names):
        m = mats[name]
        if m.shape[0] != T:
            raise ValueError(f"{name}: {m.shape[0]} time steps but {T} characters")
        bounded = m.min() >= 0 and m.max() <= 1
        image = ax.imshow(m.T, aspect="auto", interpolation="nearest", cmap="viridis" if bounded else "RdBu_r",
                          vmin=0 if bounded else -np.abs(m).max(), vmax=1 if bounded else np.abs(m).max())
        ax.set_ylabel(f"{name}\nunit")
        if units is not None:
            ax.set_yticks(range(len(units)))
            ax.set_yticklabels([str(u) for u in units], fontsize=7)
        fig.colorbar(image, ax=ax, pad=0.01)
    axes[-1].set_xticks(range(T))
    axes[-1].set_xticklabels([_visible(c) for c in chars], fontsize=7)
    axes[-1].set_xlabel("input character")
    axes[0].set_title(title)
    return fig


def plot_forecast(
    truth, predictions: Mapping[str, object], x=None, title: str = "Forecast", xlabel: str = "time step",
    ylabel: str = "value", ax=None,
) -> Figure:
    """The true series (black) and one or more predictions of it."""
    _, ax = _figure_and_axes(ax)
    truth = _as_numpy(truth)
    xs = np.arange(1, len(truth) + 1) if x is None else _as_numpy(x)
    ax.plot(xs, truth, color="black", linewidth=1.0, alpha=0.6, label="truth")
    return plot_lines(predictions, x=x, title=title, xlabel=xlabel, ylabel=ylabel, ax=ax, legend=True)


def plot_confusion(matrix, labels: Sequence[str], title: str = "Confusion matrix", normalize: bool = True) -> Figure:
    """Rows: true class; columns: predicted class; with ``normalize`` each row sums to one (recall)."""
    m = _as_numpy(matrix)
    if normalize:
        m = m / np.clip(m.sum(axis=1, keepdims=True), 1, None)
    fig = plot_heatmap(m, labels, labels, title=title, xlabel="predicted", ylabel="true", cmap="Blues",
                       vmin=0, vmax=1 if normalize else None,
                       colorbar_label="fraction of true class" if normalize else "count")
    fig.axes[0].tick_params(axis="x", labelrotation=90)  # class names side by side would overlap
    return fig


class LivePlot:
    """A training-curve figure that redraws in place in a notebook and leaves one final figure.

    Outside a notebook (a script, a test) it does nothing. In a notebook executed for the book, the
    in-place updates collapse to the last one, so the page shows exactly one figure.
    """

    def __init__(self, title: str = "Training curves", ylabel: str = "loss"):
        self.title, self.ylabel = title, ylabel
        self._handle = None
        try:
            from IPython import get_ipython

            self._active = get_ipython() is not None and hasattr(get_ipython(), "kernel")
        except ImportError:
            self._active = False

    def update(self, history) -> None:
        if not self._active:
            return
        from IPython.display import display

        fig = plot_history(history, title=self.title, ylabel=self.ylabel)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)


def plot_runs(
    histories: Mapping[str, object],
    title: str = "Training curves",
    val: bool = True,
    train: bool = True,
    ylabel: str = "loss (nats/char)",
    ylim: tuple[float, float] | None = None,
    ax=None,
) -> Figure:
    """Several :class:`~rnnlib.train.History` objects in one plot, one colour per run.

    Validation loss is drawn solid with markers, the smoothed training loss dashed in the same colour,
    so the gap between the two lines of a colour is the run's generalization gap.
    """
    fig, ax = _figure_and_axes(ax)
    for i, (label, history) in enumerate(histories.items()):
        color = palette_color(i)
        if val and history.val_loss:
            ax.plot(history.val_step, history.val_loss, "o-", markersize=3, color=color,
                    label=f"{label}: validation" if train else label)
        if train and history.train_loss:
            ax.plot(history.step, smooth(history.train_loss), "--", linewidth=1, color=color,
                    label=f"{label}: training (smoothed)" if val else label)
    ax.set(title=title, xlabel="optimizer step", ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_histogram(
    samples: Mapping[str, Sequence[float]],
    bins: int = 40,
    logx: bool = False,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "count",
    vlines: Mapping[str, float] | None = None,
    ax=None,
) -> Figure:
    """Histograms of one or more samples on shared bins (log-spaced if ``logx``), with labelled vertical lines."""
    fig, ax = _figure_and_axes(ax)
    arrays = {label: _as_numpy(v) for label, v in samples.items()}
    values = np.concatenate([a[np.isfinite(a)] for a in arrays.values()])
    if logx:
        values = values[values > 0]
        edges = np.geomspace(values.min(), values.max(), bins + 1)
        ax.set_xscale("log")
    else:
        edges = np.linspace(values.min(), values.max(), bins + 1)
    for label, a in arrays.items():
        ax.hist(a[np.isfinite(a)], bins=edges, alpha=0.55, label=label)
    for i, (label, x) in enumerate((vlines or {}).items()):
        ax.axvline(x, color=palette_color(len(arrays) + i), linestyle="--", linewidth=1.2, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(arrays) > 1 or vlines:
        ax.legend(fontsize="small")
    return fig


def plot_lr_range(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    marks: Mapping[str, float] | None = None,
    title: str = "Learning-rate range test",
    ylabel: str = "smoothed training loss (nats/char)",
    ax=None,
) -> Figure:
    """Range-test curves ``label -> (learning rates, smoothed losses)`` on a log rate axis.

    ``marks[label]`` is the rate chosen from that curve; it is drawn as a dot on the curve.
    """
    fig, ax = _figure_and_axes(ax)
    for i, (label, (lrs, losses)) in enumerate(curves.items()):
        lrs, losses = _as_numpy(lrs), _as_numpy(losses)
        ok = np.isfinite(losses)
        ax.plot(lrs[ok], losses[ok], color=palette_color(i), label=label)
        if marks and label in marks:
            x = marks[label]
            y = np.interp(np.log(x), np.log(lrs[ok]), losses[ok])
            ax.plot([x], [y], "o", color=palette_color(i), markersize=7, markeredgecolor="black",
                    label=f"{label}: chosen {x:.2g}")
    ax.set_xscale("log")
    ax.set(title=title, xlabel="learning rate (log scale)", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_seed_comparison(groups: Mapping[str, Sequence[float]], title: str = "", ylabel: str = "",
                         xlabel: str = "", ax=None) -> Figure:
    """Every run as a dot (one column per group, e.g. one per model) and a bar at each group's mean.

    ``groups[label]`` holds one value per run (per seed), so the spread is visible next to the means.
    """
    fig, ax = _figure_and_axes(ax, width=3.6, height=3.6)
    for k, (label, values) in enumerate(groups.items()):
        v = _as_numpy(list(values))
        offsets = np.linspace(-0.1, 0.1, len(v)) if len(v) > 1 else np.zeros(1)
        ax.plot(k + offsets, v, "o", color=palette_color(k), alpha=0.75, label=f"{label}: {len(v)} runs")
        ax.hlines(v.mean(), k - 0.28, k + 0.28, color=palette_color(k), linewidth=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups))
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_scan_pattern(rounds: Sequence[Sequence[tuple[int, int]]], T: int, title: str = "", ax=None) -> Figure:
    """The data flow of a parallel scan over ``T`` positions: one row per round, top to bottom.

    ``rounds[r]`` lists the ``(src, dst)`` combines of round r (as :func:`rnnlib.scan.scan_pattern` gives
    them): a coloured arrow from ``src`` to ``dst``; every position also keeps its own value (grey line).
    The bottom row is labelled with the states :math:`h_1 \\dots h_T` the scan has produced.
    """
    fig, ax = _figure_and_axes(ax, width=max(4.0, 0.75 * T + 1.5), height=1.0 + 0.75 * (len(rounds) + 1))
    depth = len(rounds)
    for r, pairs in enumerate(rounds):
        y0, y1 = depth - r, depth - r - 1
        for t in range(T):
            ax.plot([t, t], [y0, y1], color="0.8", linewidth=1, zorder=1)
        for src, dst in pairs:
            ax.annotate("", xy=(dst, y1 + 0.12), xytext=(src, y0 - 0.12),
                        arrowprops={"arrowstyle": "-|>", "color": f"C{r % 10}", "linewidth": 1.3}, zorder=2)
    for r in range(depth + 1):
        ax.plot(range(T), [depth - r] * T, "o", color="white", markeredgecolor="0.3", markersize=9, zorder=3)
    ax.set_xticks(range(T))
    ax.set_xticklabels([f"$(a_{{{t + 1}}}, b_{{{t + 1}}})$" for t in range(T)], fontsize=8)
    ax.tick_params(axis="x", length=0)
    secondary = ax.secondary_xaxis("bottom")
    secondary.set_xticks(range(T))
    secondary.set_xticklabels([f"$h_{{{t + 1}}}$" for t in range(T)], fontsize=9)
    secondary.tick_params(axis="x", length=0, pad=18)
    ax.set_yticks([depth - r for r in range(depth + 1)])
    ax.set_yticklabels(["input"] + [f"after round {r}" for r in range(1, depth + 1)])
    ax.set_ylim(-0.5, depth + 0.5)
    ax.set_xlim(-0.6, T - 0.4)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    total = sum(len(p) for p in rounds)
    ax.set_title(title or f"{depth} rounds, {total} combines")
    return fig
