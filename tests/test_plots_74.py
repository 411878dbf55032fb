"""Behaviour tests of the chapter 7.4 diagrams in rnnlib.plots (deep and bidirectional RNNs)."""
import pytest
from matplotlib.figure import Figure

from rnnlib.diagrams import plot_bidirectional_diagram, plot_deep_rnn_diagram


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def test_deep_rnn_diagram_has_one_state_per_layer_and_step():
    fig = plot_deep_rnn_diagram(num_layers=3, steps=4)
    texts = _texts(fig)
    assert isinstance(fig, Figure)
    for layer in (1, 2, 3):
        for t in (1, 2, 3, 4):
            assert f"$H^{{({layer})}}_{{{t}}}$" in texts
    assert "$H^{(4)}_{1}$" not in texts
    assert sum(s.startswith("$X_") for s in texts) == 4 and sum(s.startswith("$O_") for s in texts) == 4


def test_bidirectional_diagram_highlight_fades_what_the_output_has_not_read():
    fig = plot_bidirectional_diagram(steps=5, highlight=3)
    patches = fig.axes[0].patches  # per step: input, forward, backward, output boxes
    alpha = {(kind, t): patches[4 * (t - 1) + k].get_alpha() for t in range(1, 6)
             for k, kind in enumerate(("in", "fwd", "bwd", "out"))}
    assert [alpha["fwd", t] == 1.0 for t in range(1, 6)] == [True, True, True, False, False]
    assert [alpha["bwd", t] == 1.0 for t in range(1, 6)] == [False, False, True, True, True]
    assert [alpha["out", t] == 1.0 for t in range(1, 6)] == [False, False, True, False, False]
    assert all(alpha["in", t] == 1.0 for t in range(1, 6))


@pytest.mark.parametrize("call", [lambda: plot_deep_rnn_diagram(num_layers=0),
                                  lambda: plot_bidirectional_diagram(steps=0),
                                  lambda: plot_bidirectional_diagram(steps=4, highlight=5)])
def test_diagrams_refuse_impossible_sizes(call):
    with pytest.raises(ValueError):
        call()
