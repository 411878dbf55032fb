"""Running a notebook again in the same kernel gives the same results (it seeds itself).

A reader often re-runs a notebook top to bottom without restarting. Every notebook calls
`rnnlib.set_seed` and builds its generators from fixed seeds, so the second run must print the same
losses, samples and results table as the first. The getting-started notebook is run twice in one
kernel in quick mode; timings are masked before comparing, everything else must match exactly.
"""
from __future__ import annotations

import copy
import re

import nbformat
import pytest
from nbclient import NotebookClient

from fixture_book import ROOT

NOTEBOOKS = ["chapters/0-getting-started.ipynb", "chapters/7-1-foundations.ipynb"]
TIMING = re.compile(r"\d+(\.\d+)?\s*(ms|s|seconds|it/s|s/it)\b|\d\d:\d\d(<\d\d:\d\d)?")
NUMBER = re.compile(r"\d+\.\d{3,}")
# A results-table row of a wall-clock figure (status "ok (timing)" or "outside (timing, ...)"), as a text
# line or as an HTML row: its value is a measured time or speed ratio, so its numbers are masked too.
TIMING_ROW = re.compile(r"<tr>(?:(?!</tr>).)*\(timing(?:(?!</tr>).)*</tr>|^[^\n]*\(timing[^\n]*$", re.M | re.S)


TIMING_STATUS = re.compile(r"ok \(timing\)|outside \(timing, not enforced\)")


def _mask_timings(text: str) -> str:
    """Mask the values of timing rows and their status (in band or not depends on the machine's load)."""
    def mask_row(m):
        row = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "<n>", m.group(0))
        return re.sub(r"[ \t]+", " ", TIMING_STATUS.sub("<timing status>", row))  # padding follows the value's width

    text = TIMING_ROW.sub(mask_row, text)
    return TIMING.sub("<time>", text)


def _as_on_screen(text: str) -> str:
    """What a terminal shows for `text`: each line keeps only what follows its last carriage return, so a
    progress bar that redrew itself a different number of times reads the same."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _comparable(outputs) -> list[tuple[str, str]]:
    """The outputs as (kind, text), with wall-clock timings masked; widget views are left out (their
    model ids are random and their state holds rates), images are derived from printed numbers.

    The kernel sends printed text in chunks whose boundaries depend on timing: two prints may arrive as
    one stream output or as two, and stdout and stderr are flushed separately. So each stream's text is
    joined into one entry (in the order it was printed) and compared as a whole, after the rich outputs."""
    kept, streams = [], {}
    for out in outputs:
        if out.output_type == "stream":
            streams[out.name] = streams.get(out.name, "") + out.text
        elif out.output_type in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                continue
            for mime in ("text/plain", "text/html", "text/markdown"):
                if mime in data:
                    kept.append((mime, _mask_timings(data[mime])))
        elif out.output_type == "error":
            kept.append(("error", f"{out.ename}: {out.evalue}"))
    for name in sorted(streams):
        kept.append((name, _mask_timings(_as_on_screen(streams[name]))))
    return kept


@pytest.mark.parametrize("path", [n for n in NOTEBOOKS if (ROOT / n).is_file()])
def test_second_run_in_the_same_kernel_gives_the_same_results(path, monkeypatch):
    monkeypatch.setenv("RNNLIB_QUICK", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel keeps its inline backend, as for a reader
    monkeypatch.delenv("RNNLIB_RESULTS_DIR", raising=False)
    nb = nbformat.read(ROOT / path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str((ROOT / path).parent)}})
    runs = []
    with client.setup_kernel():
        for _ in range(2):
            outputs = []
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    client.execute_cell(cell, index)
                    outputs.append(_comparable(copy.deepcopy(cell.outputs)))
            runs.append(outputs)
    first, second = runs
    printed = "".join(text for cell in first for _, text in cell)
    assert NUMBER.search(printed), "the notebook printed no numbers to compare"
    for k, (a, b) in enumerate(zip(first, second)):
        assert a == b, f"{path}: code cell {k + 1} gave different output when run again in the same kernel"


def _stream(name, text):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_comparison_ignores_chunk_boundaries_and_redraws_but_not_content():
    merged = [_stream("stdout", "25,121 parameters\nloss 4.176\n")]
    split = [_stream("stdout", "25,121 parameters\n"), _stream("stderr", "10%\r50%\r100% 3.2 s\n"),
             _stream("stdout", "loss 4.176\n")]
    redrawn = [_stream("stderr", "100% 2.9 s\n"), _stream("stdout", "25,121 parameters\nloss 4.176\n")]
    assert _comparable(split) == _comparable(redrawn)
    assert [o for o in _comparable(split) if o[0] == "stdout"] == _comparable(merged)
    assert _comparable([_stream("stdout", "25,121 parameters\nloss 4.177\n")]) != _comparable(merged)


def test_timing_rows_of_a_results_table_are_masked_and_no_other_row():
    from rnnlib.results import Results

    def table(ratio, loss):
        r = Results("t")
        r.add("step time: rnnlib / nn", ratio, (0.5, 2), unit="x", timing=True)
        r.add("validation loss", loss, (1, 3))
        data = {"text/plain": repr(r), "text/html": r._repr_html_()}
        return [nbformat.v4.new_output("execute_result", data=data, execution_count=1)]

    assert _comparable(table(0.9939, 1.234)) == _comparable(table(0.9741, 1.234))
    assert _comparable(table(0.9939, 1.234)) == _comparable(table(2.5, 1.234))  # outside its band this time
    assert _comparable(table(0.9939, 1.234)) != _comparable(table(0.9939, 1.235))
    assert "<timing status>" in _comparable(table(0.99, 1.2))[0][1]
