"""Sphinx extension: pages that load without JavaScript errors.

sphinx-thebe 0.3.1 (part of Jupyter Book 1) registers its inline ``const THEBE_JS_URL = ...`` script
twice, once as a builder asset and once through the registry, so every page logs
"Identifier 'THEBE_JS_URL' has already been declared". This drops repeated scripts (same source and
same attributes, e.g. the same inline body) from each page. The browser test (tests/reader/
test_browser.py) fails on any console error, so it would notice if this stopped working.
"""
from __future__ import annotations


def _key(script) -> tuple:
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {}) or {}
    return (filename, tuple(sorted((k, str(v)) for k, v in attributes.items())))


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: Sphinx resets this list for every page


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)  # after extensions have added theirs
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
