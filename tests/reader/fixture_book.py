"""A tiny book with the course's own Jupyter Book settings, for tests that must run in seconds.

It has what the real book's checks look for but the real book may not yet contain: math, a tqdm
progress-bar widget, a captioned figure with alt text, and an exercise whose solution is a dropdown. Each
notebook appends its name to the file named by ``FIXTURE_EXEC_LOG`` when it is executed, so a test can
count executions, and prints ``FIXTURE_VALUE`` so a test can change a notebook's code; the exercise
records it with ``rnnlib.results.Results`` for the results page (a copy of book/results.md).
"""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[2]
SOLUTION_MARKER = "SOLUTION-TEXT-MARKER"
FIGURE_ALT = "A rising straight line, drawn by the fixture notebook."


def book_config(root: Path = ROOT) -> dict:
    """The real _config.yml, with paths made absolute so the same settings work from another folder."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    config = copy.deepcopy(config)
    config["title"] = "Fixture book"
    config.pop("bibtex_bibfiles", None)  # no citations here, so sphinxcontrib-bibtex is not loaded
    config.get("sphinx", {}).get("config", {}).pop("bibtex_reference_style", None)
    sphinx = config.setdefault("sphinx", {})
    sphinx["local_extensions"] = {name: str(root / path) for name, path in sphinx.get("local_extensions", {}).items()}
    for key, holder in (("logo", config), ("favicon", config.get("html", {}))):
        if holder.get(key):
            holder[key] = str(root / holder[key])
    static = sphinx.get("config", {}).get("html_static_path", [])
    sphinx.setdefault("config", {})["html_static_path"] = [str(root / p) for p in static]
    return config


def _log_cell(name: str) -> str:
    return (
        "import os\n"
        f"with open(os.environ['FIXTURE_EXEC_LOG'], 'a') as log:  # counts executions\n"
        f"    log.write('{name}\\n')"
    )


def chapter_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    figure = nbformat.v4.new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots(figsize=(3, 2))\n"
        "ax.plot([0, 1], [0, 1])\n"
        "plt.show()"
    )
    figure.metadata["mystnb"] = {"image": {"alt": FIGURE_ALT}, "figure": {"caption": "A captioned figure."}}
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# Fixture chapter\n\nInline math $\\alpha_t = \\tanh(x_t)$, and a display:\n\n"
            "$$\nh_t = \\tanh(W_{hh} h_{t-1} + W_{xh} x_t)\n$$\n\n"
            "See the [exercise](exercises/exercise.ipynb)."
        ),
        nbformat.v4.new_code_cell(_log_cell("chapter")),
        nbformat.v4.new_code_cell(
            "from tqdm.auto import tqdm\n"
            "for _ in tqdm(range(3), desc='fixture progress'):\n"
            "    pass"
        ),
        figure,
    ]
    return nb


def exercise_notebook(value: str = "1") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# Fixture exercise\n\n"
            "```{exercise}\n:label: ex-fixture\n\nShow that $1 + 1 = 2$.\n```\n\n"
            f"```{{solution}} ex-fixture\n:class: dropdown\n\nBy definition, $1 + 1 = 2$. {SOLUTION_MARKER}\n```"
        ),
        nbformat.v4.new_code_cell(_log_cell("exercise")),
        nbformat.v4.new_code_cell(f"print('FIXTURE_VALUE', {value})"),
        nbformat.v4.new_code_cell(  # the closing results table every chapter has, recorded for the results page
            "from rnnlib.results import Results\n"
            "results = Results('Fixture exercise')\n"
            f"results.add('fixture value', {value}, (0, 10), unit='units')\n"
            "results.check()\n"
            "results"
        ),
    ]
    return nb


TOC = {
    "format": "jb-book",
    "root": "index",
    "parts": [
        {"caption": "Chapters", "chapters": [{"file": "chapters/chapter"}]},
        {"caption": "Exercises", "chapters": [{"file": "chapters/exercises/exercise"}]},
        {"caption": "Reference", "chapters": [{"file": "results"}]},
    ],
}


def write_fixture_book(dest: Path, root: Path = ROOT) -> Path:
    """Write the fixture book's sources into ``dest`` and return it."""
    (dest / "chapters" / "exercises").mkdir(parents=True, exist_ok=True)
    (dest / "_config.yml").write_text(yaml.safe_dump(book_config(root), sort_keys=False))
    (dest / "_toc.yml").write_text(yaml.safe_dump(TOC, sort_keys=False))
    (dest / "index.md").write_text(
        "# Fixture book\n\nA tiny book for tests. Math: $e^{i\\pi} + 1 = 0$.\n\n"
        "- [Chapter](chapters/chapter.ipynb)\n- [Exercise](chapters/exercises/exercise.ipynb)\n"
    )
    (dest / "results.md").write_text((root / "book" / "results.md").read_text())
    nbformat.write(chapter_notebook(), dest / "chapters" / "chapter.ipynb")
    nbformat.write(exercise_notebook(), dest / "chapters" / "exercises" / "exercise.ipynb")
    return dest
