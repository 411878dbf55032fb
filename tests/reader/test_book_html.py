"""Static checks of the built HTML, no browser: links resolve, images have alt text, one H1 per page,
nothing is loaded from the network, figures and widgets are really in the page.

They run on the quick build of the real book (`make book-quick`) and on the fixture book, which holds
what the real book may not have yet (a widget, a figure, an exercise with a solution).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from bs4 import BeautifulSoup

BOOKS = ["quick_book", "fixture_book"]
LINK_ATTRS = {"a": "href", "link": "href", "script": "src", "img": "src", "iframe": "src", "source": "src",
              "video": "src", "audio": "src", "embed": "src"}
# a pydata-sphinx-theme header shown only when printing (display: none on screen): not a second title
PRINT_ONLY = "onlyprint"


@pytest.fixture(params=BOOKS)
def book(request):
    return request.getfixturevalue(request.param)


def html_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.html") if not {"_static", "_sources", "_images"} & set(p.relative_to(root).parts))


@lru_cache(maxsize=None)
def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def is_redirect(page: BeautifulSoup) -> bool:
    return page.find("meta", attrs={"http-equiv": re.compile("refresh", re.I)}) is not None


def ids_of(path: Path) -> set[str]:
    page = soup(path)
    return {el["id"] for el in page.find_all(id=True)} | {el["name"] for el in page.find_all("a", attrs={"name": True})}


def local_targets(root: Path, path: Path):
    """(tag, url, resolved file, fragment) for every link from `path` into the build."""
    page = soup(path)
    for tag, attr in LINK_ATTRS.items():
        for el in page.find_all(tag):
            url = el.get(attr)
            if not url:
                continue
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue  # external (checked elsewhere where it matters) or data:, mailto:, javascript:
            if not parts.path:
                yield tag, url, path, unquote(parts.fragment)
                continue
            target = (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            yield tag, url, target, unquote(parts.fragment)
    meta = page.find("meta", attrs={"http-equiv": re.compile("refresh", re.I)})
    if meta is not None:
        target = meta["content"].split("url=", 1)[-1].strip()
        yield "meta", target, (path.parent / target).resolve(), ""


def test_the_build_has_a_page_for_every_toc_entry(book):
    missing = [p.html for p in book.pages if not (book.html / p.html).is_file()]
    assert not missing, f"{book.name}: pages listed in _toc.yml but not built: {missing}"


def test_no_broken_internal_links(book):
    broken = []
    for path in html_files(book.html):
        for tag, url, target, fragment in local_targets(book.html, path):
            where = path.relative_to(book.html)
            if not target.is_file():
                broken.append(f"{where}: <{tag}> {url} -> no such file")
            elif fragment and target.suffix == ".html" and fragment not in ids_of(target):
                broken.append(f"{where}: <{tag}> {url} -> no element with id {fragment!r}")
    assert not broken, f"{book.name}: {len(broken)} broken internal link(s):\n" + "\n".join(broken[:50])


IMAGE_FILE = re.compile(r"\.(png|jpe?g|svg|gif|webp)$", re.IGNORECASE)


def lacks_alt_text(img) -> bool:
    """True when an <img> has no real description. docutils fills a missing alt with the image's own
    path, so an alt that equals the src or looks like a file name counts as missing too."""
    alt = (img.get("alt") or "").strip()
    src = (img.get("src") or "").strip()
    return not alt or alt == src or bool(IMAGE_FILE.search(alt)) or Path(alt).name == Path(src).name


def test_alt_text_check_rejects_missing_and_file_name_alts():
    imgs = BeautifulSoup(
        '<img src="a.png"><img alt=" " src="b.png">'
        '<img alt="../_images/cbd6.png" src="../_images/cbd6.png"><img alt="plot.svg" src="x/plot.svg">'
        '<img alt="Validation loss falls from 4.2 to 1.7 nats per character." src="../_images/c.png">',
        "html.parser",
    ).find_all("img")
    assert [lacks_alt_text(img) for img in imgs] == [True, True, True, True, False]


def test_every_image_has_alt_text(book):
    missing = []
    for path in html_files(book.html):
        for img in soup(path).find_all("img"):
            if lacks_alt_text(img):
                missing.append(f"{path.relative_to(book.html)}: {img.get('src')} (alt={img.get('alt')!r})")
    assert not missing, (
        f"{book.name}: images without alt text (in a notebook, set the cell's metadata "
        f"mystnb.image.alt):\n" + "\n".join(missing)
    )


def test_every_page_has_exactly_one_h1(book):
    wrong = []
    for path in html_files(book.html):
        page = soup(path)
        if is_redirect(page):
            continue
        titles = [h.get_text(" ", strip=True) for h in page.find_all("h1") if not h.find_parent(class_=PRINT_ONLY)]
        if len(titles) != 1:
            wrong.append(f"{path.relative_to(book.html)}: {len(titles)} H1 {titles}")
    assert not wrong, f"{book.name}: pages without exactly one H1 (a notebook starts with one '# Title'):\n" + "\n".join(wrong)


def test_nothing_is_loaded_from_the_network(book):
    remote = []
    for path in html_files(book.html):
        page = soup(path)
        for el in page.find_all("script", src=True):
            if urlsplit(el["src"]).scheme or el["src"].startswith("//"):
                remote.append(f"{path.relative_to(book.html)}: <script src={el['src']}>")
        for el in page.find_all("link", href=True):
            rel = " ".join(el.get("rel", [])).lower()
            if ("stylesheet" in rel or "preload" in rel or "modulepreload" in rel) and (
                urlsplit(el["href"]).scheme or el["href"].startswith("//")
            ):
                remote.append(f"{path.relative_to(book.html)}: <link rel={rel} href={el['href']}>")
    assert not remote, (
        f"{book.name}: the offline book loads from the network (serve it from _build/assets: see "
        "_config.yml and book/_ext/fetch_assets.py):\n" + "\n".join(remote)
    )


def test_offline_assets_are_in_the_build(book):
    config = book.config["sphinx"]["config"]
    static = book.html / "_static"
    wanted = [config["mathjax_path"], *config["nb_ipywidgets_js"]]
    missing = [w for w in wanted if not (static / w).is_file()]
    assert not missing, f"{book.name}: not copied into _static: {missing}"


def test_figures_are_images_not_text(book):
    """A matplotlib figure shown without an image formatter appears as '<Figure size 640x480 with 1 Axes>'."""
    found = []
    for path in html_files(book.html):
        for pre in soup(path).select(".cell_output pre, .output pre"):
            text = pre.get_text()
            if re.search(r"<Figure size \d+x\d+ with \d+ Axes>", text):
                found.append(f"{path.relative_to(book.html)}: {text.strip()[:80]}")
    assert not found, f"{book.name}: figures rendered as text instead of images:\n" + "\n".join(found)


def test_live_training_plot_leaves_exactly_one_figure(quick_book):
    """fit(..., live_plot=True) redraws one figure in place while training; the page keeps its last frame only.
    (The real book only: the fixture book trains nothing.)"""
    book = quick_book
    found = {}
    for path in html_files(book.html):
        for cell in soup(path).select("div.cell"):
            source, output = cell.select_one(".cell_input"), cell.select_one(".cell_output")
            if source is not None and "live_plot=True" in source.get_text():
                found[f"{path.relative_to(book.html)}"] = len(output.find_all("img")) if output else 0
    assert found, f"{book.name}: no page trains with live_plot=True (the getting-started notebook should)"
    assert all(n == 1 for n in found.values()), f"{book.name}: images under each live-plot cell: {found}"


def test_every_captioned_output_figure_holds_an_image(book):
    """A cell's `mystnb.figure.caption` captions every display output of that cell: a progress bar or a
    text repr in the same cell gets the caption too, and the page shows 'Fig. 1' around no picture."""
    wrong = []
    for path in html_files(book.html):
        for fig in soup(path).select(".cell_output figure"):
            if fig.find(["img", "svg"]) is None:
                caption = fig.find("figcaption")
                text = caption.get_text(" ", strip=True)[:70] if caption else ""
                wrong.append(f"{path.relative_to(book.html)}: a figure without an image: {text!r}")
    assert not wrong, (
        f"{book.name}: captioned outputs that are not images (give the figure its own cell, or show only "
        f"the figure in the captioned cell):\n" + "\n".join(wrong)
    )


def test_every_widget_view_has_its_state(book):
    """A widget output whose model is missing from the page's embedded state renders as a blank area."""
    problems = []
    for path in html_files(book.html):
        page = soup(path)
        views = [json.loads(s.string) for s in page.find_all("script", type="application/vnd.jupyter.widget-view+json")]
        if not views:
            continue
        states = page.find_all("script", type="application/vnd.jupyter.widget-state+json")
        models = set()
        for s in states:
            models |= set(json.loads(s.string).get("state", {}))
        for view in views:
            if view["model_id"] not in models:
                problems.append(f"{path.relative_to(book.html)}: widget {view['model_id']} has no saved state")
        scripts = [s.get("src", "") for s in page.find_all("script")]
        if not any("embed-amd.js" in s for s in scripts):
            problems.append(f"{path.relative_to(book.html)}: widgets but no widget manager script")
    assert not problems, f"{book.name}:\n" + "\n".join(problems)


def test_results_page_shows_every_recorded_table(book):
    """Each notebook's Results.check() writes JSON; the results page (book/_ext/results_page.py) shows
    every one: notebook, mode, device, and each figure with its value and expected band."""
    pages = [p for p in book.pages if p.source.suffix == ".md" and "{results-table}" in p.source.read_text()]
    if not pages:
        pytest.skip(f"{book.name}: no page of this book has a results table")
    page = soup(book.html / pages[0].html)
    article = page.find("article") or page
    recorded = sorted(book.results.glob("*.json")) if book.results.is_dir() else []
    # Every chapter notebook keeps a results table and must have recorded it in this build (the exercises are
    # built as the learner receives them, with nothing trained, so they record none).
    expected_titles = {m for nb in sorted((book.source / "chapters").glob("*.ipynb"))
                       for m in re.findall(r'Results\((?:\\)?"([^"\\]+)(?:\\)?"\)', nb.read_text())}
    recorded_titles = {json.loads(f.read_text())["notebook"] for f in recorded}
    assert expected_titles <= recorded_titles, (
        f"{book.name}: notebooks whose results table was not recorded: {sorted(expected_titles - recorded_titles)}")
    if not recorded:
        assert "No results were recorded" in article.get_text(" ")
        return
    titles = {"".join(h.find_all(string=True, recursive=False)).strip() or h.get_text(strip=True): h
              for h in article.find_all("h2")}  # the title without its "#" permalink
    problems = []
    for file in recorded:
        data = json.loads(file.read_text())
        heading = titles.get(data["notebook"])
        if heading is None:
            problems.append(f"{file.name}: no section {data['notebook']!r} on {pages[0].html}")
            continue
        meta = heading.find_next("p").get_text(" ")
        if data["mode"] not in meta or data["device"] not in meta or "s to run the notebook" not in meta:
            problems.append(f"{data['notebook']}: mode/device/run time missing from {meta!r}")
        rows = {tr.find_all("td")[0].get_text(): [td.get_text() for td in tr.find_all("td")]
                for tr in heading.find_next("table").find_all("tr") if tr.find_all("td")}
        for e in data["entries"]:
            row = rows.get(e["name"])
            expected = [e["name"], f"{e['value']:.4g}", e["unit"], f"[{e['low']:.4g}, {e['high']:.4g}]"]
            if row is None or row[:4] != expected:
                problems.append(f"{data['notebook']}: row {row}, expected {expected} + status")
    assert not problems, f"{book.name}: the results page does not match the recorded results:\n" + "\n".join(problems)


def test_fixture_book_exercises_what_these_checks_look_for(fixture_book):
    """The fixture must really contain a widget, a figure with alt text, math and a solution."""
    chapter = soup(fixture_book.html / "chapters" / "chapter.html")
    exercise = soup(fixture_book.html / "chapters" / "exercises" / "exercise.html")
    assert chapter.find("script", type="application/vnd.jupyter.widget-view+json") is not None
    assert any(img.get("src", "").endswith(".png") and "fixture notebook" in img.get("alt", "")
               for img in chapter.find_all("img"))
    assert any(fig.find("img") for fig in chapter.select(".cell_output figure"))
    assert chapter.select(".math")
    assert exercise.select(".solution")
