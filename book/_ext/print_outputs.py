"""Sphinx extension: notebook outputs that only a browser can show, made printable for the PDF.

A notebook output carries several representations and myst-nb's ``SelectMimeType`` post-transform keeps
the one the builder prefers. The LaTeX builder (``make pdf``) can use neither widgets nor HTML, so it
would fall back to the plain-text form, which for these outputs is an object's repr:
``HBox(children=(HTML(value=''), FloatProgress(...)))`` or the progress bar's first frame for a tqdm bar,
``<pandas.io.formats.style.Styler at 0x7f...>`` for a styled table. Just before that selection, for any
builder that shows neither HTML nor widgets, this extension replaces

- a widget output by a sentence built from the widget state the notebook saved: a progress bar's final
  text (``GRU language model: 100% 40/40 [00:04<00:00, loss=2.726]``), or, for an interactive explorer,
  which controls it has and that it needs a running notebook;
- an HTML table (a pandas DataFrame or Styler) by the same table as a document table;
- a code listing shown with ``IPython.display.Code``, whose LaTeX form is a ``Verbatim`` environment
  that myst-nb would place inside a math environment (which stops LaTeX), by its plain text.

HTML builds are unchanged: they show the live widgets and the HTML tables.
"""
from __future__ import annotations

import html
import json
import re

from docutils import nodes
from myst_nb.core.render import get_mime_priority
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
TEXT_MODELS = {"HTMLModel", "HTMLMathModel", "LabelModel"}
PROGRESS_MODELS = {"FloatProgressModel", "IntProgressModel"}
CONTROL_SUFFIXES = ("SliderModel", "DropdownModel", "ToggleButtonsModel", "ToggleButtonModel", "CheckboxModel",
                    "RadioButtonsModel", "SelectModel", "TextModel", "ButtonModel", "FloatTextModel", "IntTextModel")


def plain_text(markup: str) -> str:
    """Text of an HTML fragment: tags dropped, entities decoded, tqdm's figure spaces made spaces."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", markup or ""))
    return " ".join(text.replace("\u2007", " ").replace("\xa0", " ").split())


def describe_widget(model_id: str, state: dict) -> str:
    """One sentence for a widget output, from the notebook's saved widget state."""
    texts, controls, progress = [], [], False

    def walk(mid: str) -> None:
        nonlocal progress
        model = state.get(mid.removeprefix("IPY_MODEL_"))
        if model is None:
            return
        name, values = model.get("model_name", ""), model.get("state", {})
        if name in TEXT_MODELS and plain_text(values.get("value", "")):
            texts.append(plain_text(values["value"]))
        elif name in PROGRESS_MODELS:
            progress = True
        elif name.endswith(CONTROL_SUFFIXES):
            controls.append(plain_text(values.get("description", "")) or name.removesuffix("Model").lower())
        for child in values.get("children", []):
            walk(child)

    walk(model_id)
    if controls:
        return (f"An interactive explorer (controls: {', '.join(controls)}) is shown here in the HTML book; "
                "run the notebook to use it.")
    if progress:
        return "Progress bar at the end of the run: " + (" ".join(texts) or "finished") + "."
    if texts:
        return " ".join(texts)
    return "A widget is shown here in the HTML book; run the notebook to use it."


def _grid(table) -> list[tuple[bool, list[str]]]:
    """Rows of an HTML table as (is_header_row, cell texts), with row and column spans expanded."""
    rows, pending = [], {}  # pending[column] = (text, rows still to fill) for rowspans
    for tr in table.find_all("tr"):
        cells, col = [], 0
        header = tr.find_parent("thead") is not None or all(c.name == "th" for c in tr.find_all(["th", "td"]))
        for cell in tr.find_all(["th", "td"]):
            while col in pending:
                text, left = pending.pop(col)
                cells.append(text)
                if left > 1:
                    pending[col] = (text, left - 1)
                col += 1
            text = cell.get_text(" ", strip=True)
            for k in range(int(cell.get("colspan", 1) or 1)):
                cells.append(text if k == 0 else "")
                if int(cell.get("rowspan", 1) or 1) > 1:
                    pending[col] = ("", int(cell["rowspan"]) - 1)
                col += 1
        while col in pending:
            text, left = pending.pop(col)
            cells.append(text)
            if left > 1:
                pending[col] = (text, left - 1)
            col += 1
        rows.append((header, cells))
    return rows


def html_table(markup: str) -> nodes.table | None:
    """The first <table> of an HTML fragment as a docutils table, or None if there is none."""
    from bs4 import BeautifulSoup

    table = BeautifulSoup(markup, "html.parser").find("table")
    if table is None:
        return None
    rows = [r for r in _grid(table) if r[1]]
    if not rows:
        return None
    width = max(len(cells) for _, cells in rows)
    node, group = nodes.table(classes=["notebook-table"]), nodes.tgroup(cols=width)
    caption = table.find("caption")
    if caption is not None and caption.get_text(strip=True):  # a Styler's caption, often with the units
        node += nodes.title(text=caption.get_text(" ", strip=True))
    node += group
    group += [nodes.colspec(colwidth=1) for _ in range(width)]
    head, body = nodes.thead(), nodes.tbody()
    seen_body = False
    for header, cells in rows:
        row = nodes.row()
        for text in cells + [""] * (width - len(cells)):
            row += nodes.entry("", nodes.paragraph(text=text))
        if header and not seen_body:
            head += row
        else:
            seen_body = True
            body += row
    if len(head):
        group += head
    group += body
    return node


class PrintableOutputs(SphinxPostTransform):
    default_priority = 3  # before myst-nb's SelectMimeType (priority 4) picks one representation

    def run(self, **kwargs) -> None:
        shown = get_mime_priority(self.app.builder.name, self.config["nb_mime_priority_overrides"])
        if WIDGET_VIEW in shown or "text/html" in shown:
            return
        states: dict[str, dict] = {}
        for bundle in list(self.document.findall(_is_mime_bundle)):
            mimes = {child["mime_type"]: child for child in bundle.children}
            if "\\begin{Verbatim}" in mimes.get("text/latex", nodes.Text("")).astext() and "text/plain" in mimes:
                bundle.remove(mimes.pop("text/latex"))
            if any(m in mimes for m in ("image/png", "image/jpeg", "application/pdf", "text/latex")):
                continue  # already printable
            if WIDGET_VIEW in mimes:
                docname = self._docname(bundle)
                if docname not in states:
                    states[docname] = self._widget_state(docname)
                found = re.search(r'"model_id":\s*"([^"]+)"', mimes[WIDGET_VIEW].astext())
                sentence = describe_widget(found.group(1) if found else "", states[docname])
                bundle.replace_self(nodes.paragraph("", "", nodes.emphasis(text=sentence)))
            elif "text/html" in mimes:
                table = html_table(mimes["text/html"].astext())
                if table is not None:
                    bundle.replace_self(table)

    def _docname(self, node) -> str:
        """The notebook a node comes from. The LaTeX builder joins every page into one tree, so the tree's
        own source is the root page; myst-nb records each output's notebook in the node's ``source``."""
        while node is not None:
            if getattr(node, "source", None):
                docname = self.env.path2doc(node.source)
                if docname:
                    return docname
            if isinstance(node, addnodes.start_of_file):
                return node["docname"]
            node = node.parent
        return self.env.path2doc(self.document["source"]) or ""

    def _widget_state(self, docname: str) -> dict:
        """The widget state myst-nb saved for this notebook (what the HTML page embeds)."""
        metadata = getattr(self.env, "nb_metadata", {}).get(docname, {})
        _, attributes = metadata.get("js_files", {}).get("ipywidgets_state", (None, {}))
        body = attributes.get("body") if attributes else None
        return json.loads(body).get("state", {}) if body else {}


def _is_mime_bundle(node) -> bool:
    return isinstance(node, nodes.container) and node.get("nb_element") == "mime_bundle"


def setup(app):
    app.add_post_transform(PrintableOutputs)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
