"""Sphinx extension: stop the build early, with a clear message, when the offline JavaScript is missing.

The book serves MathJax, require.js and the ipywidgets HTML manager itself (``_config.yml``:
``html_static_path``, ``mathjax_path``, ``nb_ipywidgets_js``); ``make assets`` fetches them (see
``fetch_assets.py``). Without this check a build run without ``make`` would fail with a bare
"html_static_path entry does not exist" warning, or, worse, a config edited back to a CDN URL would
produce a book that shows raw LaTeX and blank progress bars offline.
"""
from __future__ import annotations

from pathlib import Path

from sphinx.errors import ExtensionError


def _check(app, config) -> None:
    wanted = [config.mathjax_path, *getattr(config, "nb_ipywidgets_js", {}).keys()]
    remote = [w for w in wanted if "://" in w or w.startswith("//")]
    if remote:
        raise ExtensionError(
            f"the book must not load JavaScript from the network, but the configuration asks for {remote}; "
            "point mathjax_path and nb_ipywidgets_js at the files `make assets` fetches (see _config.yml)"
        )
    roots = [Path(app.confdir, p) for p in config.html_static_path]
    missing = [w for w in wanted if not any((root / w).is_file() for root in roots)]
    if missing:
        raise ExtensionError(
            f"the book's offline JavaScript is missing: {missing} not found under html_static_path "
            f"{[str(r) for r in roots]}. Run `make assets` (part of `make book` and `make book-quick`), which "
            "fetches MathJax, require.js and the widget manager from the npm registry into _build/assets."
        )


def setup(app):
    # before Sphinx's own check of html_static_path (priority 800), which only says "does not exist"
    app.connect("config-inited", _check, priority=100)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
