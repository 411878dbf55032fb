"""Sphinx extension: fixes for what axe-core (tests/reader/test_a11y.py) found in the built pages.

Rewrites of a page's body just before it is written (notebooks stay as they are):

- **Empty table headers** (axe ``empty-table-header``): a pandas DataFrame's HTML puts an empty ``<th>``
  above its index; a screen reader announces it as a nameless column header. An empty header cell
  becomes an ordinary empty cell (``<td>``), which is what it is.
- **The bibliography's list** (axe ``aria-required-children``, ``aria-deprecated-role``): docutils marks
  the list of references ``role="list"`` but each entry ``role="doc-biblioentry"``, a role ARIA has
  deprecated and that a list may not contain; each entry becomes a ``listitem``.

And, for the parts of a page that come from the theme's templates:

- **Content outside landmarks** (axe ``region``): the sidebar's logo and title link is wrapped in a
  ``<nav>`` by the template ``book/_templates/book-home.html``, which this extension puts in the
  sidebar in place of the theme's ``navbar-logo.html``.
- **Scrollable progress bars** (axe ``scrollable-region-focusable``): ``book/_ext/static/book.css``,
  added to every page, lets a progress bar's label wrap instead of scrolling.
"""
from __future__ import annotations

import re
from pathlib import Path

EMPTY_HEADER = re.compile(r"<th(\s[^>]*)?>(?:\s|&nbsp;|&#160;)*</th>")


def fix_empty_table_headers(body: str) -> str:
    return EMPTY_HEADER.sub(lambda m: f"<td{m.group(1) or ''}></td>", body)


def fix_bibliography_roles(body: str) -> str:
    return body.replace('role="doc-biblioentry"', 'role="listitem"')


FIXES = [fix_empty_table_headers, fix_bibliography_roles]
TEMPLATES = Path(__file__).resolve().parents[1] / "_templates"
STYLESHEET = "book.css"  # in book/_ext/static, which _config.yml lists in html_static_path


def _fix_page(app, pagename, templatename, context, doctree) -> None:
    if isinstance(context.get("body"), str):
        for fix in FIXES:
            context["body"] = fix(context["body"])


# sphinx-book-theme 1.3's default primary sidebar (its theme.conf), with the logo wrapped in a landmark.
SIDEBAR = ["book-home.html", "icon-links.html", "search-button-field.html", "sbt-sidebar-nav.html"]


def _add_templates(app, config) -> None:
    if str(TEMPLATES) not in config.templates_path:
        config.templates_path.insert(0, str(TEMPLATES))
    if not config.html_sidebars:
        config.html_sidebars = {"**": SIDEBAR}


def setup(app):
    app.connect("config-inited", _add_templates)
    app.add_css_file(STYLESHEET)
    app.connect("html-page-context", _fix_page)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
