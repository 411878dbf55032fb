"""Diagrams of the course: the models drawn as boxes and arrows, and a timeline of the field.

Each function draws with matplotlib patches (no image files) and returns a ``matplotlib.figure.Figure``,
like the data plots in :mod:`rnnlib.plots`: the unrolled RNN (7.1), the history timeline (7.1), the LSTM
cell (7.2), the GRU cell in PyTorch's and the original paper's form (7.3), a stacked RNN (7.4a) and a
bidirectional RNN (7.4b). Symbols follow the book's notation page.
"""
from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from .plots import BLUE, VERMILLION, _figure_and_axes, new_figure


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
    arrow([(-0.4, y_cell), (10.6, y_cell)], lw=3.0, color=BLUE)
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
        ax.scatter([year], [0], s=30, color=BLUE, zorder=2)
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
                    ha="center", va="center", color=VERMILLION)

    # Folded: one cell and a loop on the hidden state.
    node(0, 0, "$X_t$", "x"); node(0, 1.4, "$H_t$", "h"); node(0, 2.8, "$O_t$", "o")
    arrow((0, 0.26), (0, 1.14), "$W_{xh}$", (0.38, 0))
    arrow((0, 1.66), (0, 2.54), "$W_{hq}$", (0.38, 0))
    # the loop: out of the right side of H_t, round, and back in (one step later)
    ax.plot([0.40, 0.72, 0.72], [1.52, 1.52, 1.28], color="0.25", linewidth=1.1)
    arrow((0.72, 1.28), (0.40, 1.28))
    ax.text(0.80, 1.4, "$W_{hh}$", fontsize=9, color=VERMILLION, va="center")
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
                           color=VERMILLION if layer > 1 else "black")
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
                color=VERMILLION, va="center")
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
        _diagram_arrow(ax, (x + 0.37, y_in + 0.3), (x + 0.37, y_bwd - 0.3), color=VERMILLION, alpha=on(t, "bwd"))
        _diagram_arrow(ax, (x - 0.37, y_fwd + 0.3), (x - 0.37, y_out - 0.3), alpha=min(on(t, "fwd"), on(t, "out")))
        _diagram_arrow(ax, (xb, y_bwd + 0.3), (xb, y_out - 0.3), color=VERMILLION,
                       alpha=min(on(t, "bwd"), on(t, "out")))
        if t < steps:
            _diagram_arrow(ax, (xf + 0.37, y_fwd), (xf + 1.6 - 0.37, y_fwd), alpha=on(t + 1, "fwd"))
            _diagram_arrow(ax, (xb + 1.6 - 0.37, y_bwd), (xb + 0.37, y_bwd), color=VERMILLION, alpha=on(t, "bwd"))
    ax.text(0.6, y_in, "input", ha="right", va="center", fontsize=9)
    ax.text(0.6, y_fwd, "forward", ha="right", va="center", fontsize=9)
    ax.text(0.6, y_bwd, "backward", ha="right", va="center", fontsize=9, color=VERMILLION)
    ax.text(0.6, y_out, "output", ha="right", va="center", fontsize=9)
    ax.set_xlim(-0.7, 1.6 * steps + 0.8)
    ax.set_ylim(-0.5, y_out + 0.5)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Training and optimizing (chapter 7.5): several runs, distributions, learning-rate range tests
# ---------------------------------------------------------------------------------------------------------


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
    state = {"color": BLUE, "lw": 3.0}
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
