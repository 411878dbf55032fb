"""Figures for the course. Every function takes data and returns a ``matplotlib.figure.Figure``.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot`` so that nothing is shown
twice or left open: a notebook displays the returned figure (it is the cell's value), a script saves it.
Models never plot; they return numbers, and these helpers draw them.
:class:`LivePlot` redraws one training-curve figure in place while a notebook trains.
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


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.4, height: float = 4.0, **kw):
    """A Figure and its axes (like ``plt.subplots``, without pyplot's global state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=True, **kw)
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
        ax.plot(steps, loss, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth(loss), color="tab:blue", label="training (smoothed)")
    if history.val_loss:
        ax.plot(history.val_step, history.val_loss, "o-", color="tab:orange", label="validation")
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


def plot_lstm_cell(title: str = "Inside an LSTM cell", ax=None) -> Figure:
    r"""A diagram of one LSTM step (course notation): gates, cell-state path and output.

    Drawn with matplotlib patches so that it needs no image file. Boxes are a linear map of
    :math:`[H_{t-1}; X_t]` followed by :math:`\sigma` or tanh; circles are element-wise operations.
    The thick line along the top is the cell-state path :math:`C_{t-1} \to C_t`, which meets only a
    multiplication by :math:`F_t` and an addition.
    """
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    fig, ax = _figure_and_axes(ax, width=8.0, height=4.6)
    ax.set_xlim(-0.6, 11.0)
    ax.set_ylim(-0.6, 6.1)
    ax.set_aspect("equal")
    ax.axis("off")
    line = dict(color="0.25", linewidth=1.4)

    def arrow(points, lw=1.4, color="0.25", head=True):
        for (x0, y0), (x1, y1) in zip(points[:-2], points[1:-1]):
            ax.plot([x0, x1], [y0, y1], color=color, linewidth=lw, solid_capstyle="round", zorder=1)
        if not head:
            ax.plot(*zip(*points[-2:]), color=color, linewidth=lw, solid_capstyle="round", zorder=1)
            return
        ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=11,
                                     color=color, linewidth=lw, shrinkA=0, shrinkB=0, zorder=1))

    def box(x, y, text, color):
        ax.add_patch(FancyBboxPatch((x - 0.42, y - 0.3), 0.84, 0.6, boxstyle="round,pad=0.02",
                                    facecolor=color, edgecolor="0.2", linewidth=1.1, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=12, zorder=4)

    def node(x, y, text):
        ax.add_patch(Circle((x, y), 0.24, facecolor="white", edgecolor="0.2", linewidth=1.1, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=12, zorder=4)

    def label(x, y, text, **kw):
        ax.text(x, y, text, zorder=4, **{"fontsize": 11, "ha": "center", "va": "center", **kw})

    # The cell: a rounded frame.
    ax.add_patch(FancyBboxPatch((1.0, 0.55), 8.6, 4.75, boxstyle="round,pad=0.05,rounding_size=0.3",
                                facecolor="#f3f3f3", edgecolor="0.55", linewidth=1.0, zorder=0))
    y_cell, y_gate, y_bus, y_h = 4.6, 2.55, 1.45, 0.95
    x_f, x_i, x_g, x_o, x_mul, x_out, x_up = 2.9, 4.35, 5.75, 7.15, 5.05, 8.35, 9.2
    gate_color, cand_color = "#fdd9a8", "#bfdcf2"

    # Cell-state path along the top: C_{t-1} -> x F_t -> + I_t * C~_t -> C_t.
    arrow([(-0.4, y_cell), (10.6, y_cell)], lw=3.0, color="#1f5fa0")
    label(-0.35, y_cell + 0.35, r"$C_{t-1}$", ha="left")
    label(10.6, y_cell + 0.35, r"$C_t$", ha="right")
    node(x_f, y_cell, r"$\times$")
    node(x_mul, y_cell, r"$+$")

    # H_{t-1} enters at the bottom left, X_t from below; together they feed every gate.
    arrow([(-0.4, y_h), (1.6, y_h), (1.6, y_bus), (x_o, y_bus)], head=False)
    label(-0.35, y_h - 0.32, r"$H_{t-1}$", ha="left")
    arrow([(2.2, -0.35), (2.2, y_bus)], lw=1.4)
    label(2.45, -0.2, r"$X_t$", ha="left")
    label(3.6, y_bus - 0.3, r"$[H_{t-1};\, X_t]$", fontsize=10, color="0.3")
    for x in (x_f, x_i, x_g, x_o):
        arrow([(x, y_bus), (x, y_gate - 0.3)])

    # The four gates: a linear map of [H_{t-1}; X_t], then sigma or tanh.
    box(x_f, y_gate, r"$\sigma$", gate_color)
    box(x_i, y_gate, r"$\sigma$", gate_color)
    box(x_g, y_gate, r"$\tanh$", cand_color)
    box(x_o, y_gate, r"$\sigma$", gate_color)
    arrow([(x_f, y_gate + 0.3), (x_f, y_cell - 0.24)])
    label(x_f - 0.38, 3.55, r"$F_t$", ha="right")

    # Input gate times candidate, added to the cell state.
    y_ig = 3.6
    node(x_mul, y_ig, r"$\times$")
    arrow([(x_i, y_gate + 0.3), (x_i, y_ig), (x_mul - 0.24, y_ig)])
    arrow([(x_g, y_gate + 0.3), (x_g, y_ig), (x_mul + 0.24, y_ig)])
    label(x_i - 0.38, 3.2, r"$I_t$", ha="right")
    label(x_g + 0.38, 3.2, r"$\tilde C_t$", ha="left")
    arrow([(x_mul, y_ig + 0.24), (x_mul, y_cell - 0.24)])

    # Output: O_t * tanh(C_t) = H_t.
    y_tanh, y_oh = 3.6, 2.55
    ax.add_patch(FancyBboxPatch((x_out - 0.38, y_tanh - 0.22), 0.76, 0.44, boxstyle="round,pad=0.02,rounding_size=0.2",
                                facecolor="white", edgecolor="0.2", linewidth=1.1, zorder=3))
    ax.text(x_out, y_tanh, r"$\tanh$", ha="center", va="center", fontsize=11, zorder=4)
    arrow([(x_out, y_cell), (x_out, y_tanh + 0.22)])
    node(x_out, y_oh, r"$\times$")
    arrow([(x_out, y_tanh - 0.22), (x_out, y_oh + 0.24)])
    arrow([(x_o + 0.42, y_gate), (x_out - 0.24, y_oh)])
    label(7.75, y_gate + 0.25, r"$O_t$")
    arrow([(x_out, y_oh - 0.24), (x_out, y_h), (10.6, y_h)])
    label(10.6, y_h - 0.32, r"$H_t$", ha="right")
    arrow([(x_up, y_h), (x_up, 5.95)])
    label(x_up - 0.15, 5.8, r"$H_t$ to the output layer $\hat Y_t = H_t W_{hq} + b_q$", ha="right", fontsize=10)

    # Key.
    label(5.9, 0.1, "box: a linear map of $[H_{t-1}; X_t]$, then the nonlinearity\ncircle: an element-wise operation",
          fontsize=8.5, color="0.35", ha="center", va="top")
    ax.set_title(title)
    return fig


# --- appended for chapter 7.1: a history timeline and the unrolled-graph diagram -------------------------

def plot_timeline(
    events: Sequence[tuple[float, str]],
    title: str = "A short history of recurrent networks",
    xlabel: str = "year",
    width: float = 10.0,
    height: float = 4.2,
) -> Figure:
    """A horizontal timeline of ``events``, a list of ``(year, label)``; labels may contain newlines.

    Labels go above and below the axis, on as many levels as needed so that none overlap.
    """
    if not events:
        raise ValueError("expected at least one (year, label) event")
    events = sorted(events, key=lambda e: e[0])
    years = [float(y) for y, _ in events]
    span = max(years) - min(years) or 1.0
    box = 0.135 * span  # width of one label, in years
    fig, ax = new_figure(width=width, height=height)
    ax.axhline(0, color="0.3", linewidth=1.5, zorder=1)
    right_edge: dict[tuple[int, int], float] = {}  # (side, level) -> right end of the last label there
    top = 1
    for k, (year, label) in enumerate(events):
        slots = [(side, level) for level in range(6) for side in ((1, -1) if k % 2 == 0 else (-1, 1))]
        side, level = next(s for s in slots if right_edge.get(s, -float("inf")) < year - box / 2)
        right_edge[(side, level)] = year + box / 2
        top = max(top, level + 1)
        y = side * (0.8 + 1.05 * level)
        ax.plot([year, year], [0, y], color="0.65", linewidth=0.8, zorder=1)
        ax.scatter([year], [0], s=30, color="tab:blue", zorder=2)
        text = f"{year:g}: {label}"
        ax.annotate(text, (year, y), ha="center", va="bottom" if side > 0 else "top", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor="0.7"))
    ax.set_xlim(min(years) - 0.08 * span, max(years) + 0.08 * span)
    ax.set_ylim(-(0.8 + 1.05 * top), 0.8 + 1.05 * top)
    ax.set_yticks([])
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)
    ax.set(title=title, xlabel=xlabel)
    return fig


def plot_unrolled_rnn(steps: int = 4, title: str = "An RNN folded (left) and unrolled over time (right)") -> Figure:
    """The recurrence H_t = phi(X_t W_xh + H_{t-1} W_hh + b_h), O_t = H_t W_hq + b_q as a graph.

    Left: one cell with its recurrent loop. Right: the same cell copied ``steps`` times, with the same
    three weight matrices at every step (the copies share parameters).
    """
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    fig, ax = new_figure(width=2.2 + 1.9 * (steps + 1), height=3.8)
    colors = {"x": "#dbe9f6", "h": "#fde2c4", "o": "#d9f0d3"}

    def node(x, y, text, kind):
        ax.add_patch(FancyBboxPatch((x - 0.36, y - 0.26), 0.72, 0.52, boxstyle="round,pad=0.04",
                                    facecolor=colors[kind], edgecolor="0.3", linewidth=1.0))
        ax.text(x, y, text, ha="center", va="center", fontsize=11)

    def arrow(p, q, text="", offset=(0.0, 0.0), style="-|>", rad=0.0, color="0.25"):
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle=style, mutation_scale=12, color=color, linewidth=1.1,
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0))
        if text:
            ax.text((p[0] + q[0]) / 2 + offset[0], (p[1] + q[1]) / 2 + offset[1], text, fontsize=9,
                    ha="center", va="center", color="tab:red")

    # Folded: one cell and a loop on the hidden state.
    node(0, 0, "$X_t$", "x"); node(0, 1.4, "$H_t$", "h"); node(0, 2.8, "$O_t$", "o")
    arrow((0, 0.26), (0, 1.14), "$W_{xh}$", (0.38, 0))
    arrow((0, 1.66), (0, 2.54), "$W_{hq}$", (0.38, 0))
    # the loop: out of the right side of H_t, round, and back in (one step later)
    ax.plot([0.40, 0.72, 0.72], [1.52, 1.52, 1.28], color="0.25", linewidth=1.1)
    arrow((0.72, 1.28), (0.40, 1.28))
    ax.text(0.80, 1.4, "$W_{hh}$", fontsize=9, color="tab:red", va="center")
    ax.text(1.55, 1.4, "=", fontsize=20, ha="center", va="center")
    # Unrolled: H_0, then one copy of the cell per time step.
    x0 = 2.4
    node(x0, 1.4, "$H_0$", "h")
    for t in range(1, steps + 1):
        x = x0 + 1.7 * t
        node(x, 0, f"$X_{t}$", "x"); node(x, 1.4, f"$H_{t}$", "h"); node(x, 2.8, f"$O_{t}$", "o")
        arrow((x, 0.26), (x, 1.14), "$W_{xh}$", (0.38, 0))
        arrow((x, 1.66), (x, 2.54), "$W_{hq}$", (0.38, 0))
        arrow((x - 1.7 + 0.36, 1.4), (x - 0.36, 1.4), "$W_{hh}$", (0, 0.2))
    ax.text(x0 + 1.7 * steps / 2 + 0.85, -0.65, "time $t$ →  (the same $W_{xh}, W_{hh}, W_{hq}$ at every step)",
            ha="center", va="center", fontsize=9)
    ax.set_xlim(-0.7, x0 + 1.7 * steps + 0.7)
    ax.set_ylim(-0.9, 3.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Diagrams of deep (stacked) and bidirectional recurrent networks (chapter 7.4)
# ---------------------------------------------------------------------------------------------------------
def _diagram_box(ax, x: float, y: float, text: str, color: str, width: float = 0.9, height: float = 0.55,
                 alpha: float = 1.0) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.04",
                                facecolor=color, edgecolor="black", linewidth=1.0, alpha=alpha))
    ax.text(x, y, text, ha="center", va="center", fontsize=10, alpha=max(alpha, 0.5))


def _diagram_arrow(ax, start: tuple[float, float], end: tuple[float, float], color: str = "black",
                   alpha: float = 1.0) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color=color, lw=1.3, alpha=alpha, shrinkA=0, shrinkB=0))


def plot_deep_rnn_diagram(num_layers: int = 3, steps: int = 4, title: str = "A deep (stacked) RNN unrolled over time") -> Figure:
    """Unrolled stacked RNN: inputs :math:`X_t` at the bottom, one row of states :math:`H^{(l)}_t` per layer,
    outputs :math:`O_t` on top. Horizontal arrows are the recurrence of each layer (:math:`W^{(l)}_{hh}`),
    vertical arrows feed layer :math:`l - 1` into layer :math:`l` (:math:`W^{(l)}_{xh}`; dropout acts on them
    for :math:`l \\geq 2`)."""
    if num_layers < 1 or steps < 1:
        raise ValueError(f"num_layers and steps must be positive, got {num_layers} and {steps}")
    fig, ax = new_figure(width=1.5 * steps + 2.4, height=1.0 * num_layers + 2.2)
    layer_colors = ["#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5"]
    top = num_layers + 1
    for t in range(1, steps + 1):
        x = 1.5 * t
        _diagram_box(ax, x, 0, f"$X_{{{t}}}$", "#fdd0a2")
        for layer in range(1, num_layers + 1):
            color = layer_colors[min(layer - 1, len(layer_colors) - 1)]
            _diagram_box(ax, x, layer, f"$H^{{({layer})}}_{{{t}}}$", color)
            _diagram_arrow(ax, (x, layer - 1 + 0.3), (x, layer - 0.3),
                           color="tab:red" if layer > 1 else "black")
            if t < steps:
                _diagram_arrow(ax, (x + 0.47, layer), (x + 1.5 - 0.47, layer))
        _diagram_box(ax, x, top, f"$O_{{{t}}}$", "#c7e9c0")
        _diagram_arrow(ax, (x, num_layers + 0.3), (x, top - 0.3))
    for layer in range(1, num_layers + 1):
        ax.text(0.45, layer, f"layer {layer}", ha="right", va="center", fontsize=9)
        _diagram_arrow(ax, (0.55, layer), (1.5 - 0.47, layer), alpha=0.5)
        ax.text(0.8, layer + 0.12, "$H_0$", fontsize=7, alpha=0.7, ha="center")
    ax.text(0.45, 0, "input", ha="right", va="center", fontsize=9)
    ax.text(0.45, top, "output", ha="right", va="center", fontsize=9)
    if num_layers > 1:
        ax.text(1.5 * steps + 0.55, 1.5, "red arrows:\nlayer to layer,\ndropout here", fontsize=8,
                color="tab:red", va="center")
    ax.set_xlim(-0.6, 1.5 * steps + 1.6)
    ax.set_ylim(-0.5, top + 0.5)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def plot_bidirectional_diagram(steps: int = 4, highlight: int | None = None,
                               title: str = "A bidirectional RNN unrolled over time") -> Figure:
    """Unrolled bidirectional RNN: inputs :math:`X_t`, a forward row :math:`\\overrightarrow{H}_t` (arrows to
    the right), a backward row :math:`\\overleftarrow{H}_t` (arrows to the left), and outputs computed from
    the concatenation at the same time index.

    With ``highlight=t`` (1-based) everything the output :math:`O_t` depends on is drawn in full colour
    and the rest is faded: the forward state has read :math:`X_1 \\ldots X_t`, the backward state
    :math:`X_t \\ldots X_T`, so :math:`O_t` depends on every input.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    if highlight is not None and not 1 <= highlight <= steps:
        raise ValueError(f"highlight must be a time step in 1 … {steps}, got {highlight}")
    fig, ax = new_figure(width=1.6 * steps + 2.2, height=4.4)
    y_in, y_fwd, y_bwd, y_out = 0.0, 1.2, 2.2, 3.4

    def on(t: int, row: str) -> float:
        if highlight is None:
            return 1.0
        if row == "fwd":
            return 1.0 if t <= highlight else 0.25
        if row == "bwd":
            return 1.0 if t >= highlight else 0.25
        if row == "out":
            return 1.0 if t == highlight else 0.25
        return 1.0  # every input reaches O_t through one direction or the other

    for t in range(1, steps + 1):
        x = 1.6 * t
        xf, xb = x - 0.22, x + 0.22  # the two rows are staggered so that arrows pass beside the boxes
        _diagram_box(ax, x, y_in, f"$X_{{{t}}}$", "#fdd0a2", alpha=on(t, "in"))
        _diagram_box(ax, xf, y_fwd, rf"$\overrightarrow{{H}}_{{{t}}}$", "#9ecae1", width=0.7, alpha=on(t, "fwd"))
        _diagram_box(ax, xb, y_bwd, rf"$\overleftarrow{{H}}_{{{t}}}$", "#fcbba1", width=0.7, alpha=on(t, "bwd"))
        _diagram_box(ax, x, y_out, f"$O_{{{t}}}$", "#c7e9c0", alpha=on(t, "out"))
        _diagram_arrow(ax, (xf, y_in + 0.3), (xf, y_fwd - 0.3), alpha=on(t, "fwd"))
        _diagram_arrow(ax, (x + 0.37, y_in + 0.3), (x + 0.37, y_bwd - 0.3), color="tab:red", alpha=on(t, "bwd"))
        _diagram_arrow(ax, (x - 0.37, y_fwd + 0.3), (x - 0.37, y_out - 0.3), alpha=min(on(t, "fwd"), on(t, "out")))
        _diagram_arrow(ax, (xb, y_bwd + 0.3), (xb, y_out - 0.3), color="tab:red",
                       alpha=min(on(t, "bwd"), on(t, "out")))
        if t < steps:
            _diagram_arrow(ax, (xf + 0.37, y_fwd), (xf + 1.6 - 0.37, y_fwd), alpha=on(t + 1, "fwd"))
            _diagram_arrow(ax, (xb + 1.6 - 0.37, y_bwd), (xb + 0.37, y_bwd), color="tab:red", alpha=on(t, "bwd"))
    ax.text(0.6, y_in, "input", ha="right", va="center", fontsize=9)
    ax.text(0.6, y_fwd, "forward", ha="right", va="center", fontsize=9)
    ax.text(0.6, y_bwd, "backward", ha="right", va="center", fontsize=9, color="tab:red")
    ax.text(0.6, y_out, "output", ha="right", va="center", fontsize=9)
    ax.set_xlim(-0.7, 1.6 * steps + 0.8)
    ax.set_ylim(-0.5, y_out + 0.5)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Training and optimizing (chapter 7.5): several runs, distributions, learning-rate range tests
# ---------------------------------------------------------------------------------------------------------
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
    colors = [f"C{i}" for i in range(10)]
    for i, (label, history) in enumerate(histories.items()):
        color = colors[i % len(colors)]
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
        ax.axvline(x, color=f"C{len(arrays) + i}", linestyle="--", linewidth=1.2, label=label)
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
        ax.plot(lrs[ok], losses[ok], color=f"C{i}", label=label)
        if marks and label in marks:
            x = marks[label]
            y = np.interp(np.log(x), np.log(lrs[ok]), losses[ok])
            ax.plot([x], [y], "o", color=f"C{i}", markersize=7, markeredgecolor="black",
                    label=f"{label}: chosen {x:.2g}")
    ax.set_xscale("log")
    ax.set(title=title, xlabel="learning rate (log scale)", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


# --- GRU cell diagram (appended for chapter 7.3) ---------------------------------------------------
def plot_gru_cell(reset_after: bool = True, title: str | None = None, ax=None) -> Figure:
    r"""Diagram of one GRU step, with the reset gate where ``reset_after`` puts it.

    ``reset_after=True`` is ``torch.nn.GRU`` (and cuDNN): :math:`R_t` multiplies :math:`H_{t-1} W_{hh} + b_{hh}`.
    ``reset_after=False`` is Cho et al. (2014): :math:`R_t` multiplies :math:`H_{t-1}` before :math:`W_{hh}`.
    The top line carries the state: :math:`H_t = Z_t \odot H_{t-1} + (1 - Z_t) \odot \tilde H_t`.
    """
    from matplotlib.patches import Circle, FancyBboxPatch

    fig, ax = _figure_and_axes(ax, width=7.5, height=4.4)
    ax.set_xlim(-0.2, 12.5)
    ax.set_ylim(-0.1, 6.7)
    ax.set_aspect("equal")
    ax.axis("off")
    line = {"color": "0.25", "lw": 1.3}

    def path(points, arrow=True):
        xs, ys = zip(*points)
        ax.plot(xs[:-1] if arrow else xs, ys[:-1] if arrow else ys, **line, solid_capstyle="butt")
        if arrow:
            ax.annotate("", xy=points[-1], xytext=points[-2],
                        arrowprops={"arrowstyle": "-|>", "color": "0.25", "lw": 1.3, "shrinkA": 0, "shrinkB": 0})

    def box(x, y, text, color, w=1.0, h=0.8):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05",
                                    fc=color, ec="0.2", lw=1.2, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=11, zorder=4)

    def node(x, y, text, r=0.27):
        ax.add_patch(Circle((x, y), r, fc="white", ec="0.2", lw=1.2, zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=9 if text == "1−" else 12, zorder=4)

    def dot(x, y):
        ax.plot([x], [y], "o", color="0.25", ms=3.5, zorder=2)

    gate, cand, lin = "#fdd9a8", "#bfdcf2", "#e0e0e0"    # the colours of plot_lstm_cell
    state = {"color": "#1f5fa0", "lw": 3.0}
    y_top, y_z, y_r, y_box, y_h, y_x = 6.2, 5.2, 4.5, 3.4, 2.0, 1.0
    x_z, x_r, x_plus, x_mz, x_one, x_mn = 2.8, 4.6, 8.6, 8.6, 9.6, 10.6
    x_mr, x_w = (7.3, 5.9) if reset_after else (5.6, 6.9)

    ax.add_patch(FancyBboxPatch((0.95, 0.55), 10.25, 5.95, boxstyle="round,pad=0.1", fc="#f3f3f3", ec="0.55",
                                lw=1.0, zorder=0))
    # the state line: H_{t-1} -> (x Z_t) -> (+) -> H_t
    ax.text(-0.1, y_top, r"$H_{t-1}$", ha="left", va="center", fontsize=12)
    ax.plot([0.9, x_mz - 0.27], [y_top, y_top], **state, zorder=1)
    node(x_mz, y_top, r"$\odot$")
    ax.plot([x_mz + 0.27, x_mn - 0.27], [y_top, y_top], **state, zorder=1)
    node(x_mn, y_top, "+")
    ax.annotate("", xy=(11.6, y_top), xytext=(x_mn + 0.27, y_top),
                arrowprops={"arrowstyle": "-|>", "color": state["color"], "lw": 3.0, "shrinkA": 0, "shrinkB": 0})
    ax.text(11.65, y_top, r"$H_t$", ha="left", va="center", fontsize=12)

    # the two feeds: H_{t-1} down to y_h, X_t up to y_x
    dot(1.1, y_top)
    path([(1.1, y_top), (1.1, y_h), (x_w - 0.5 if reset_after else x_mr - 0.27, y_h)])
    ax.text(1.9, -0.05, r"$X_t$", ha="center", va="bottom", fontsize=12)
    path([(1.9, 0.4), (1.9, y_x), (x_plus, y_x), (x_plus, y_h - 0.27)])

    # gates: each reads X_t and H_{t-1}
    for x, name, label in ((x_z, r"$\sigma$", r"update $Z_t$"), (x_r, r"$\sigma$", r"reset $R_t$")):
        for dx, y in ((-0.2, y_h), (0.2, y_x)):
            dot(x + dx, y)
            path([(x + dx, y), (x + dx, y_box - 0.45)])
        box(x, y_box, name, gate, w=0.9)
        ax.text(x + 0.12, y_box + 0.6, label, ha="left", va="center", fontsize=9)

    # Z_t: to the old state, and (1 - Z_t) to the candidate
    path([(x_z, y_box + 0.45), (x_z, y_z), (x_mz, y_z), (x_mz, y_top - 0.27)], arrow=True)
    dot(x_mz, y_z)
    path([(x_mz, y_z), (x_one - 0.3, y_z)])
    node(x_one, y_z, "1−", r=0.3)
    path([(x_one + 0.3, y_z), (x_mn - 0.27, y_z)])
    node(x_mn, y_z, r"$\odot$")
    path([(x_mn, y_z + 0.27), (x_mn, y_top - 0.27)])

    # R_t: into the candidate, before or after the hidden matrix product
    path([(x_r, y_box + 0.45), (x_r, y_r), (x_mr, y_r), (x_mr, y_h + 0.27)])
    node(x_mr, y_h, r"$\odot$")
    box(x_w, y_h, r"$W_{hh}$", lin, w=0.9, h=0.7)
    if reset_after:
        path([(x_w + 0.5, y_h), (x_mr - 0.27, y_h)])
        path([(x_mr + 0.27, y_h), (x_plus - 0.27, y_h)])
    else:
        path([(x_mr + 0.27, y_h), (x_w - 0.5, y_h)])
        path([(x_w + 0.5, y_h), (x_plus - 0.27, y_h)])
    node(x_plus, y_h, "+")
    ax.text(x_plus + 0.12, (y_x + y_h) / 2 - 0.1, r"$W_{xh}$", ha="left", va="center", fontsize=9)

    # candidate: tanh, then to (1 - Z_t) ⊙
    path([(x_plus, y_h + 0.27), (x_plus, y_box - 0.4)])
    box(x_plus, y_box, "tanh", cand, w=1.0)
    path([(x_plus + 0.5, y_box), (x_mn, y_box), (x_mn, y_z - 0.27)])
    ax.text(x_plus, y_box + 0.5, r"candidate $\tilde H_t$", ha="center", va="bottom", fontsize=9)

    if title is None:
        title = ("PyTorch / cuDNN: reset after the product $H_{t-1} W_{hh}$" if reset_after
                 else "Cho et al. (2014): reset before the product $H_{t-1} W_{hh}$")
    ax.set_title(title, fontsize=11)
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
        ax.plot(k + offsets, v, "o", color=f"C{k}", alpha=0.75, label=f"{label}: {len(v)} runs")
        ax.hlines(v.mean(), k - 0.28, k + 0.28, color=f"C{k}", linewidth=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(list(groups))
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    return fig
