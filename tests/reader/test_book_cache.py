"""`make book` twice: the second build takes executed notebooks from the cache; a changed one re-runs.

Checked on the fixture book, which uses the real _config.yml's execute settings (cache mode), so it
runs in seconds. Each fixture notebook appends its name to a log when its code runs, which counts
executions directly instead of inferring them from build times.
"""
from __future__ import annotations

import json

from bs4 import BeautifulSoup

from fixture_book import ROOT, book_config


def test_fixture_uses_the_books_execution_settings(fixture_book):
    assert fixture_book.config["execute"] == book_config(ROOT)["execute"]
    assert fixture_book.config["execute"]["execute_notebooks"] == "cache"


def test_first_build_executes_every_notebook(fixture_builds):
    assert sorted(fixture_builds.executed[0]) == ["chapter", "exercise"]


def test_unchanged_book_is_not_executed_again(fixture_builds):
    assert fixture_builds.executed[1] == [], "the second build of an unchanged book re-executed notebooks"


def test_only_the_notebook_whose_code_changed_is_executed(fixture_builds):
    # Before the third build the chapter's markdown changed (so Sphinx re-read it: the cache, not
    # Sphinx's own up-to-date check, must supply its outputs) and the exercise's code changed.
    assert fixture_builds.executed[2] == ["exercise"], (
        f"third build executed {fixture_builds.executed[2]}; expected only the notebook whose code changed"
    )


def test_cached_and_re_executed_outputs_are_in_the_pages(fixture_builds):
    html = fixture_builds.book.html
    chapter = BeautifulSoup((html / "chapters" / "chapter.html").read_text(), "html.parser")
    exercise = (html / "chapters" / "exercises" / "exercise.html").read_text()
    assert fixture_builds.changed_markdown in chapter.get_text(), "the edited chapter was not rebuilt"
    assert chapter.find("script", type="application/vnd.jupyter.widget-view+json") is not None, (
        "the chapter's outputs (from the cache) are missing")
    assert "FIXTURE_VALUE 2" in exercise and "FIXTURE_VALUE 1" not in exercise
    # the re-executed notebook recorded its new result, and the results page (rebuilt every time) shows it
    recorded = json.loads((fixture_builds.book.results / "fixture-exercise.json").read_text())
    assert [e["value"] for e in recorded["entries"]] == [2.0]
    results_page = BeautifulSoup((html / "results.html").read_text(), "html.parser")
    assert ["fixture value", "2"] in [[td.get_text() for td in tr.find_all("td")][:2]
                                     for tr in results_page.select("article tr")]
