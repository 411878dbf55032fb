"""Sphinx extension: the book's results page, collected from the notebooks' closing tables.

Each chapter notebook ends with ``rnnlib.results.Results(...).check()``, which writes its table as JSON
into ``RNNLIB_RESULTS_DIR`` (``make book`` sets it). The ``{results-table}`` directive leaves a
placeholder; once every notebook has been executed (Sphinx's read phase), the placeholder is replaced
by one table per notebook, and the page is marked outdated on every build so it is never stale.
"""
from __future__ import annotations

import html
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


def _render(folder: Path | None) -> str:
    files = sorted(folder.glob("*.json")) if folder and folder.is_dir() else []
    if not files:
        return ("<p><em>No results were recorded in this build. They appear here when the book is built "
                "with <code>make book</code>, which executes every notebook.</em></p>")
    parts = []
    for file in files:
        data = json.loads(file.read_text())
        meta = (f"{data['mode']} mode, device {data['device']}, torch {data['torch']}, "
                f"{data['seconds']:.0f} s to run the notebook")
        rows = []
        for e in data["entries"]:
            band = f"[{e['low']:.4g}, {e['high']:.4g}]"
            status = e.get("status") or ("ok" if e["ok"] else ("outside" if data["mode"] == "quick" and not e["always"] else "FAIL"))
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in
                        (e["name"], f"{e['value']:.4g}", e["unit"], band, status)) + "</tr>")
        parts.append(
            f"<h2>{html.escape(data['notebook'])}</h2><p>{html.escape(meta)}</p>"
            "<table class='table'><thead><tr><th>result</th><th>value</th><th>unit</th>"
            "<th>expected band</th><th>status</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
    return "\n".join(parts)


def _resolve(app, doctree, docname):
    folder = os.environ.get("RNNLIB_RESULTS_DIR")
    for node in doctree.findall(results_placeholder):
        node.replace_self(nodes.raw("", _render(Path(folder) if folder else None), format="html"))


def _always_outdated(app, env, added, changed, removed):
    return sorted(getattr(env, "results_pages", set()))


def setup(app):
    app.add_node(results_placeholder)
    app.add_directive("results-table", ResultsTable)
    app.connect("doctree-resolved", _resolve)
    app.connect("env-get-outdated", _always_outdated)
    return {"version": "1.0", "parallel_read_safe": False, "parallel_write_safe": True}
