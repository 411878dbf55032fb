"""Every exercise notebook runs twice in quick mode: as the learner receives it, and with the reference
solutions filled in (``RNNLIB_SOLUTIONS=1``, which each check cell honours).

As received, the notebook must run without errors and every checker must report "not yet implemented"
(cells that train wait for the checks and print "Skipped"). With the solutions imported, every checker
must say that the code it checked is rnnlib's reference ("uses the reference": right, but not the
learner's own code) and the training cells must all run. Verdicts are read from the outputs: a
checker's result displays as ``<symbol> check_name: PASSED`` (or USES THE REFERENCE, FAILED, ERROR, NOT
YET IMPLEMENTED).

Run: ``.venv/bin/python -m pytest tests/test_exercises.py`` (about ten notebook executions; select one
variant with ``-k as-received`` or ``-k with-solutions``). Needs the data sets (``make data`` or
``RNNLIB_DATA_DIR``).
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "chapters" / "exercises").glob("exercise-*.ipynb"))
VERDICT = re.compile(r"^\S+ (check_\w+): (PASSED|USES THE REFERENCE|FAILED|ERROR|NOT YET IMPLEMENTED)$", re.MULTILINE)
CHECK_CALL = re.compile(r"^\w+ = (check_\w+)\(", re.MULTILINE)  # e.g. "split_check = check_split_by_time(...)"
SKIPPED = "Skipped: this cell runs once"

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


def _output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def _execute(path: Path, monkeypatch, with_solutions: bool):
    monkeypatch.setenv("RNNLIB_QUICK", "1")
    monkeypatch.setenv("RNNLIB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("RNNLIB_SOLUTIONS", "1" if with_solutions else "0")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    return nb, time.perf_counter() - start


def _checks_called(nb) -> list[str]:
    return [name for cell in nb.cells if cell.cell_type == "code" for name in CHECK_CALL.findall(cell.source)]


def _verdicts(nb) -> list[tuple[str, str]]:
    return [v for cell in nb.cells if cell.cell_type == "code" for v in VERDICT.findall(_output_text(cell))]


def test_there_are_six_exercises():
    assert [p.name for p in NOTEBOOKS] == [
        "exercise-7-1-forecasting.ipynb", "exercise-7-2-lstm-language-model.ipynb", "exercise-7-3-gru-vs-lstm.ipynb",
        "exercise-7-4-bidirectional-classifier.ipynb", "exercise-7-5-attention.ipynb",
        "exercise-7-6-min-gru.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
@pytest.mark.parametrize("with_solutions", [False, True], ids=["as-received", "with-solutions"])
def test_exercise_notebook(path, with_solutions, monkeypatch):
    nb, seconds = _execute(path, monkeypatch, with_solutions)
    print(f"{path.name} ({'with solutions' if with_solutions else 'as received'}): {seconds:.0f} s")
    called = _checks_called(nb)
    verdicts = _verdicts(nb)
    assert called, "the notebook calls no checker"
    assert [name for name, _ in verdicts] == called, f"checkers called {called}, verdicts shown {verdicts}"
    skipped = sum(SKIPPED in _output_text(cell) for cell in nb.cells if cell.cell_type == "code")
    if with_solutions:
        assert all(status == "USES THE REFERENCE" for _, status in verdicts), verdicts
        assert skipped == 0, "with the reference solutions, no cell should be skipped"
    else:
        assert all(status == "NOT YET IMPLEMENTED" for _, status in verdicts), verdicts
        assert skipped > 0, "as received, the cells that train should wait for the checks"
