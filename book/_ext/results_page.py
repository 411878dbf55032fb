"""Sphinx extension: the book's results page, collected from the notebooks' closing tables.

Each chapter notebook ends with ``rnnlib.results.Results(...).check()``, which writes its table as JSON
into ``RNNLIB_RESULTS_DIR`` (``make book`` sets it). The ``{results-table}`` directive leaves a
placeholder; once every notebook has been executed (Sphinx's read phase), the placeholder is replaced
by one table per notebook, and the page is marked outdated on every build so it is never stale.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


class results_placeholder(nodes.General, nodes.Element):
    pass


class ResultsTable(SphinxDirective):
    def run(self):
        pages = self.env.__dict__.setdefault("results_pages", set())
        pages.add(self.env.docname)
        return [results_placeholder()]


def _paragraph(text: str, emphasis: bool = False) -> nodes.paragraph:
    return nodes.paragraph("", "", nodes.emphasis(text=text) if emphasis else nodes.Text(text))


def _table(header: list[str], rows: list[list[str]]) -> nodes.table:
    table, group = nodes.table(classes=["table"]), nodes.tgroup(cols=len(header))
    table += group
    group += [nodes.colspec(colwidth=1) for _ in header]
    for part, lines in ((nodes.thead(), [header]), (nodes.tbody(), rows)):
        for line in lines:
            part += nodes.row("", *(nodes.entry("", nodes.paragraph(text=cell)) for cell in line))
        group += part
    return table


def _render(folder: Path | None) -> list[nodes.Node]:
    """One section per recorded notebook: its title, mode/device/run time, and its table. Document nodes
    rather than raw HTML, so the PDF (``make pdf``) shows the same tables as the HTML book."""
    files = sorted(folder.glob("*.json")) if folder and folder.is_dir() else []
    if not files:
        return [_paragraph("No results were recorded in this build. They appear here when the book is built "
                           "with make book, which executes every notebook.", emphasis=True)]
    parts = []
    for file in files:
        data = json.loads(file.read_text())
        meta = (f"{data['mode']} mode, device {data['device']}, torch {data['torch']}, "
                f"{data['seconds']:.0f} s to run the notebook")
        rows = []
        for e in data["entries"]:
            band = f"[{e['low']:.4g}, {e['high']:.4g}]"
            status = e.get("status") or ("ok" if e["ok"] else ("outside" if data["mode"] == "quick" and not e["always"] else "FAIL"))
            rows.append([e["name"], f"{e['value']:.4g}", e["unit"], band, status])
        section = nodes.section(ids=[nodes.make_id(f"results {data['notebook']}")])
        section += nodes.title(text=data["notebook"])
        section += _paragraph(meta)
        section += _table(["result", "value", "unit", "expected band", "status"], rows)
        parts.append(section)
    return parts


def _resolve(app, doctree, docname):
    folder = os.environ.get("RNNLIB_RESULTS_DIR")
    for node in list(doctree.findall(results_placeholder)):
        node.replace_self(_render(Path(folder) if folder else None))


def _always_outdated(app, env, added, changed, removed):
    return sorted(getattr(env, "results_pages", set()))


def setup(app):
    app.add_node(results_placeholder)
    app.add_directive("results-table", ResultsTable)
    app.connect("doctree-resolved", _resolve)
    app.connect("env-get-outdated", _always_outdated)
    return {"version": "1.0", "parallel_read_safe": False, "parallel_write_safe": True}
