"""The book's Sphinx extensions that rewrite what a page or the PDF shows (book/_ext/): the accessibility
fixes of the HTML and the printable stand-ins for widgets and HTML tables. The built book is checked as
a whole in tests/reader (test_a11y.py, test_pdf.py); these check each rewrite on small inputs, including
cases the quick build may not contain (an interactive explorer, a MultiIndex table).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))

accessible_pages = pytest.importorskip("accessible_pages")
print_outputs = pytest.importorskip("print_outputs")


def test_empty_header_cells_become_data_cells_and_named_ones_stay():
    html = ('<tr><th></th><th class="blank level0" >&nbsp;</th><th> </th><th>loss</th>'
            '<th class="index_name level0">model</th></tr>')
    fixed = accessible_pages.fix_empty_table_headers(html)
    assert fixed == ('<tr><td></td><td class="blank level0" ></td><td></td><th>loss</th>'
                     '<th class="index_name level0">model</th></tr>')


def test_bibliography_entries_become_list_items():
    html = '<div role="list" class="citation-list"><div class="citation" id="id1" role="doc-biblioentry">'
    assert 'role="listitem"' in accessible_pages.fix_bibliography_roles(html)
    assert "doc-biblioentry" not in accessible_pages.fix_bibliography_roles(html)


def _tqdm_state(description: str, left: str, right: str) -> dict:
    return {
        "bar": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_p", "IPY_MODEL_r"]}},
        "l": {"model_name": "HTMLModel", "state": {"value": left, "description": description}},
        "p": {"model_name": "FloatProgressModel", "state": {"value": 40.0, "max": 40.0}},
        "r": {"model_name": "HTMLModel", "state": {"value": right}},
    }


def test_a_progress_bar_becomes_its_final_text():
    state = _tqdm_state("", "GRU\u2007language\u2007model:\u2007100%",
                        "\u200740/40\u2007[00:04&lt;00:00,\u200712.64it/s,\u2007loss=2.726]")
    assert print_outputs.describe_widget("bar", state) == (
        "Progress bar at the end of the run: GRU language model: 100% 40/40 [00:04<00:00, 12.64it/s, loss=2.726].")


def test_an_explorer_names_its_controls_and_asks_for_a_notebook():
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_s", "IPY_MODEL_t", "IPY_MODEL_o"]}},
        "s": {"model_name": "FloatSliderModel", "state": {"description": "spectral radius", "value": 1.0}},
        "t": {"model_name": "ToggleButtonsModel", "state": {"description": "", "options": ["tanh", "relu"]}},
        "o": {"model_name": "OutputModel", "state": {"outputs": []}},
    }
    sentence = print_outputs.describe_widget("box", state)
    assert "controls: spectral radius, togglebuttons" in sentence and "run the notebook" in sentence


def test_a_widget_without_saved_state_still_gets_a_sentence():
    assert "run the notebook" in print_outputs.describe_widget("missing", {})


def _cells(table) -> list[list[str]]:
    return [[entry.astext() for entry in row.children] for row in table.findall(lambda n: n.tagname == "row")]


def test_a_dataframe_table_keeps_its_header_and_cells():
    html = ('<table class="dataframe"><thead><tr><th></th><th>loss</th><th>acc</th></tr></thead>'
            '<tbody><tr><th>GRU</th><td>1.2</td><td>0.9</td></tr><tr><th>LSTM</th><td>1.3</td><td>0.8</td></tr>'
            '</tbody></table>')
    table = print_outputs.html_table(html)
    assert _cells(table) == [["", "loss", "acc"], ["GRU", "1.2", "0.9"], ["LSTM", "1.3", "0.8"]]
    assert len(list(table.findall(lambda n: n.tagname == "thead"))) == 1


def test_spans_are_expanded_into_a_rectangular_grid():
    html = ('<table><thead><tr><th></th><th colspan="2">val</th></tr>'
            '<tr><th>model</th><th>loss</th><th>acc</th></tr></thead>'
            '<tbody><tr><th rowspan="2">GRU</th><td>1</td><td>2</td></tr><tr><td>3</td><td>4</td></tr></tbody></table>')
    assert _cells(print_outputs.html_table(html)) == [
        ["", "val", ""], ["model", "loss", "acc"], ["GRU", "1", "2"], ["", "3", "4"]]


def test_html_without_a_table_is_left_alone():
    assert print_outputs.html_table("<p>no table here</p>") is None


def test_a_styler_caption_becomes_the_table_title():
    html = '<table id="T_1"><caption>Loss (nats/char)</caption><tr><th>a</th></tr><tr><td>1</td></tr></table>'
    table = print_outputs.html_table(html)
    assert table.children[0].tagname == "title" and table.children[0].astext() == "Loss (nats/char)"
