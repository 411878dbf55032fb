"""Interactive explorers for the live notebook (ipywidgets, imported only when an explorer is built).

``import rnnlib`` never imports ipywidgets, so the library works on a headless server. A built book
cannot recompute a slider without a kernel, so each chapter that offers an explorer also shows the same
story as a static figure (for example :func:`gradient_grid`).
"""
from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the interactive explorers need ipywidgets: pip install ipywidgets (it is in requirements.txt "
            "and preinstalled on Colab)"
        ) from exc
    return ipywidgets


def gradient_figure(spectral_radius: float, seq_len: int, nonlinearity: str, hidden_size: int = 32,
                    seed: int = 0) -> Figure:
    """Gradient norm versus distance from the loss for one setting, with the measured per-step rate."""
    from .gradflow import fit_decay_rate, grad_norms_vs_distance
    from .plots import plot_grad_norms

    norms = grad_norms_vs_distance(spectral_radius, nonlinearity, seq_len, hidden_size=hidden_size, seed=seed)
    finite = norms[(norms > 0) & norms.isfinite()]
    rate = fit_decay_rate(finite) if finite.numel() >= 2 else float("nan")
    fig = plot_grad_norms(
        {f"{nonlinearity}, ρ(W_hh) = {spectral_radius:g}": norms},
        title=f"Gradient through time: measured factor per step {rate:.3f}",
    )
    return fig


def gradient_grid(radii: Sequence[float] = (0.5, 0.9, 1.0, 1.1, 1.5), seq_len: int = 60,
                  nonlinearities: Sequence[str] = ("tanh", "relu"), hidden_size: int = 32, seed: int = 0) -> Figure:
    """The static counterpart of :func:`gradient_explorer`: one panel per nonlinearity, one line per radius."""
    from .gradflow import grad_norms_vs_distance
    from .plots import new_figure, plot_grad_norms

    fig, axes = new_figure(1, len(nonlinearities), width=5.2 * len(nonlinearities), height=4.0, sharey=True)
    axes = [axes] if len(nonlinearities) == 1 else list(axes)
    for ax, nl in zip(axes, nonlinearities):
        norms = {f"ρ = {r:g}": grad_norms_vs_distance(r, nl, seq_len, hidden_size=hidden_size, seed=seed) for r in radii}
        plot_grad_norms(norms, title=f"{nl} RNN", ax=ax)
    return fig


def gradient_explorer(hidden_size: int = 32, seed: int = 0):
    """Sliders for the spectral radius of W_hh and the sequence length, and a tanh/ReLU toggle.

    Returns the widget; display it as a cell's last value. Each change recomputes the gradient norms of
    a fresh RNN (:func:`rnnlib.gradflow.grad_norms_vs_distance`) and redraws the plot; the newest
    figure is also kept as the widget's ``latest`` attribute.
    """
    widgets = _ipywidgets()
    from IPython.display import display

    radius = widgets.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.05, description="ρ(W_hh)",
                                 continuous_update=False)
    length = widgets.IntSlider(value=50, min=5, max=200, step=5, description="length", continuous_update=False)
    nonlinearity = widgets.ToggleButtons(options=["tanh", "relu"], description="φ")
    out = widgets.Output()
    box = widgets.VBox([widgets.HBox([radius, length]), nonlinearity, out])

    def redraw(_=None):
        box.latest = gradient_figure(radius.value, length.value, nonlinearity.value, hidden_size, seed)
        with out:
            out.clear_output(wait=True)
            display(box.latest)

    for w in (radius, length, nonlinearity):
        w.observe(redraw, names="value")
    redraw()
    return box


def temperature_explorer(model, vocab, prompt: str = "ROMEO:", length: int = 200, seed: int = 0):
    """A temperature slider that resamples text from a trained character model (same seed each time).

    The newest sample is also kept as the widget's ``latest`` attribute.
    """
    widgets = _ipywidgets()

    temperature = widgets.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.1, description="temperature",
                                      continuous_update=False)
    out = widgets.Output(layout={"border": "1px solid #ddd"})
    box = widgets.VBox([temperature, out])

    def redraw(_=None):
        box.latest = model.generate(vocab, prompt, length, temperature=temperature.value, generator=seed)
        with out:
            out.clear_output(wait=True)
            print(box.latest)

    temperature.observe(redraw, names="value")
    redraw()
    return box
