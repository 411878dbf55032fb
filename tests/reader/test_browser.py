"""The built book in a real browser (Debian's Chromium, headless, driven by Playwright), served from a
local web server with every request outside it blocked, as for a reader without network.

For the landing page and every page the table of contents lists: math is typeset, every image and
font loads, widgets render, the console shows no error, the sidebar lists every page, a notebook page's
Colab link opens that notebook, and exercise solutions stay collapsed until clicked. A screenshot of
each page goes to _build/quick/screenshots/ (not committed).

Each page is loaded once (the `survey` fixture) and the tests below read what it recorded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import pytest

pytestmark = pytest.mark.browser

BOOKS = ["quick_book", "fixture_book"]
WAIT_MS = 15_000  # generous: a page here loads and typesets in about a second
RAW_MATH = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$")

# Text a reader sees in the article, without code (where "$$" or "\(" may be meant literally).
VISIBLE_PROSE_JS = """() => {
  const article = document.querySelector('article.bd-article') || document.body;
  const clone = article.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, .highlight, mjx-container').forEach(e => e.remove());
  clone.style.position = 'absolute'; clone.style.left = '-99999px';
  document.body.appendChild(clone);   // innerText needs layout: measure the copy off-screen
  const text = clone.innerText;
  clone.remove();
  return text;
}"""

MATH_JS = """() => Array.from(document.querySelectorAll('article .math')).map(e => ({
  source: e.textContent.slice(0, 60), typeset: e.querySelector('mjx-container') !== null }))"""

IMAGES_JS = """() => Array.from(document.images).filter(i => !i.closest('.onlyprint')).map(i => ({
  src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0 }))"""

# Load every declared font face (icon fonts, MathJax fonts), not only those this page happens to use.
FONTS_JS = """async () => {
  const faces = Array.from(document.fonts);
  const results = await Promise.allSettled(faces.map(f => f.load()));
  return results.map((r, k) => r.status === 'rejected' ? faces[k].family : null).filter(x => x);
}"""

# The HTML manager draws each widget output into a .widget-subarea placed before its view script.
WIDGETS_JS = """() => Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
  .map(v => {
    const area = v.previousElementSibling;
    if (!area || !area.classList.contains('widget-subarea')) return { rendered: false, text: '' };
    const box = area.getBoundingClientRect();
    return { rendered: box.width > 0 && box.height > 0 && area.innerText.trim().length > 0,
             text: area.innerText.trim().slice(0, 80) };
  })"""

SIDEBAR_JS = """() => Array.from(document.querySelectorAll('nav.bd-docs-nav a.reference.internal')).map(a => a.href)"""


@dataclass
class PageReport:
    docname: str
    raw_math: list[str] = field(default_factory=list)
    untypeset_math: list[str] = field(default_factory=list)
    math_elements: int = 0
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    broken_fonts: list[str] = field(default_factory=list)
    widgets: list[dict] = field(default_factory=list)
    visible_h1: int = 0
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sidebar_visible: bool = False
    sidebar: set[str] = field(default_factory=set)
    colab_links: list[str] = field(default_factory=list)
    solutions: list[str] = field(default_factory=list)  # one verdict per solution: "ok" or what is wrong


def _wait(page, report: PageReport, what: str, condition: str, arg=None) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, arg=arg, timeout=WAIT_MS)
    except PlaywrightTimeout:
        report.errors.append(f"{what} within {WAIT_MS / 1000:.0f} s")


def _check_solutions(page, report: PageReport) -> None:
    solutions = page.locator("article .solution")
    for k in range(solutions.count()):
        solution = solutions.nth(k)
        body = solution.locator(":scope > :not(.admonition-title)")
        if body.count() == 0:
            report.solutions.append("no content")
        elif not solution.locator(".admonition-title").first.is_visible():
            report.solutions.append("its title is hidden")
        elif any(body.nth(j).is_visible() for j in range(body.count())):
            report.solutions.append("visible before any click (give the solution directive ':class: dropdown')")
        elif solution.locator("button.toggle-button").count() != 1:
            report.solutions.append("collapsed but without a toggle button")
        else:
            solution.locator("button.toggle-button").click()
            try:
                body.first.wait_for(state="visible", timeout=5_000)
                hidden = [j for j in range(body.count()) if not body.nth(j).is_visible()]
                report.solutions.append("ok" if not hidden else "partly hidden after a click")
            except Exception:  # noqa: BLE001 - any failure here means the reader cannot open it
                report.solutions.append("still hidden after a click")


def survey_page(context, base: str, page_info, screenshots) -> PageReport:
    report = PageReport(page_info.docname)

    def only_local(route) -> None:
        url = route.request.url
        if url.startswith(base) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            report.blocked.append(url)
            route.abort()

    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and report.errors.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: report.errors.append(f"uncaught: {e}"))
    page.on("response", lambda r: r.status >= 400 and report.errors.append(f"HTTP {r.status}: {r.url}"))
    page.route("**/*", only_local)
    try:
        page.goto(urljoin(base, page_info.html), wait_until="load")
        _wait(page, report, "MathJax did not load or finish typesetting",
              "() => !document.querySelector('article .math') || "
              "(window.MathJax && MathJax.startup && MathJax.startup.promise)")
        page.evaluate("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
        views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
        if views:
            _wait(page, report, "the widget manager did not render the widget outputs",
                  "n => document.querySelectorAll('.widget-subarea').length >= n", arg=views)
        report.raw_math = sorted(set(RAW_MATH.findall(page.evaluate(VISIBLE_PROSE_JS))))
        math = page.evaluate(MATH_JS)
        report.math_elements = len(math)
        report.untypeset_math = [m["source"] for m in math if not m["typeset"]]
        images = page.evaluate(IMAGES_JS)
        report.images = len(images)
        report.broken_images = [i["src"] for i in images if not i["ok"]]
        report.broken_fonts = sorted(set(page.evaluate(FONTS_JS)))
        report.widgets = page.evaluate(WIDGETS_JS)
        report.visible_h1 = page.locator("h1:visible").count()
        report.sidebar_visible = page.locator("nav.bd-docs-nav").first.is_visible()
        report.sidebar = {urlsplit(h).path.lstrip("/") for h in page.evaluate(SIDEBAR_JS)}
        report.colab_links = page.eval_on_selector_all(
            'a[href*="colab.research.google.com"]', "els => els.map(e => e.href)")
        screenshots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshots / f"{page_info.docname.replace('/', '__')}.png"), full_page=True)
        _check_solutions(page, report)  # last: it clicks
    finally:
        page.close()
    return report


@pytest.fixture(scope="session")
def survey(browser_context, serve):
    """survey(book) -> {docname: PageReport}, each page of the book loaded once per session."""
    done: dict[str, dict[str, PageReport]] = {}

    def run(book) -> dict[str, PageReport]:
        if book.name not in done:
            base = serve(book.html)
            done[book.name] = {p.docname: survey_page(browser_context, base, p, book.screenshots) for p in book.pages}
        return done[book.name]

    return run


@pytest.fixture(params=BOOKS)
def book(request):
    return request.getfixturevalue(request.param)


def _fail_if(problems: list[str], book, what: str) -> None:
    assert not problems, f"{book.name} book: {what}:\n" + "\n".join(problems)


def test_math_is_typeset(book, survey):
    problems = []
    for name, r in survey(book).items():
        if r.raw_math:
            problems.append(f"{name}: raw LaTeX delimiters {r.raw_math} left in the visible text")
        if r.untypeset_math:
            problems.append(f"{name}: {len(r.untypeset_math)} of {r.math_elements} math elements not typeset, "
                            f"e.g. {r.untypeset_math[:3]}")
    _fail_if(problems, book, "math not typeset")


def test_images_and_fonts_load(book, survey):
    problems = []
    for name, r in survey(book).items():
        if r.broken_images:
            problems.append(f"{name}: images that did not load: {r.broken_images}")
        if r.broken_fonts:
            problems.append(f"{name}: fonts that did not load: {r.broken_fonts}")
    _fail_if(problems, book, "missing images or fonts")


def test_widget_outputs_render(book, survey):
    problems = [f"{name}: {sum(not w['rendered'] for w in r.widgets)} of {len(r.widgets)} widget outputs blank"
                for name, r in survey(book).items() if not all(w["rendered"] for w in r.widgets)]
    _fail_if(problems, book, "blank widget outputs (progress bars)")


def test_no_console_errors_and_no_network(book, survey):
    problems = []
    for name, r in survey(book).items():
        if r.blocked:
            problems.append(f"{name}: tried to reach the network: {sorted(set(r.blocked))}")
        if r.errors:
            problems.append(f"{name}: " + "; ".join(r.errors))
    _fail_if(problems, book, "JavaScript errors or network requests")


def test_one_visible_title_per_page(book, survey):
    problems = [f"{name}: {r.visible_h1} visible H1" for name, r in survey(book).items() if r.visible_h1 != 1]
    _fail_if(problems, book, "pages without exactly one visible H1")


def test_sidebar_lists_every_page(book, survey):
    expected = [p.html for p in book.pages]
    problems = []
    for name, r in survey(book).items():
        if not r.sidebar_visible:
            problems.append(f"{name}: the sidebar is not visible")
        missing = [e for e in expected if e not in r.sidebar]
        if missing:
            problems.append(f"{name}: the sidebar does not list {missing}")
    _fail_if(problems, book, "incomplete navigation")


def test_colab_link_opens_this_notebook(book, survey):
    repo = book.config["repository"]
    owner_repo = urlsplit(repo["url"]).path.strip("/").removesuffix(".git")
    colab = book.config["launch_buttons"]["colab_url"].rstrip("/")
    prefix = (repo.get("path_to_book") or "").strip("/")
    reports = survey(book)
    problems = []
    for page in book.pages:
        links = reports[page.docname].colab_links
        if page.is_notebook:
            path = "/".join(filter(None, [prefix, page.docname + ".ipynb"]))
            expected = f"{colab}/github/{owner_repo}/blob/{repo['branch']}/{path}"
            if links != [expected]:
                problems.append(f"{page.docname}: Colab link {links}, expected [{expected}]")
        elif links:
            problems.append(f"{page.docname}: not a notebook, but has Colab links {links}")
    _fail_if(problems, book, "wrong Colab links")


def test_solutions_are_collapsed_until_clicked(book, survey):
    reports = survey(book)
    problems = [f"{name}, solution {k + 1}: {verdict}" for name, r in reports.items()
                for k, verdict in enumerate(r.solutions) if verdict != "ok"]
    _fail_if(problems, book, "exercise solutions not collapsed until clicked")


def test_fixture_gives_every_browser_check_something_to_check(fixture_book, survey):
    """Otherwise a check above could pass on the fixture because it found nothing to look at."""
    reports = survey(fixture_book)
    chapter, exercise = reports["chapters/chapter"], reports["chapters/exercises/exercise"]
    assert chapter.math_elements >= 2 and exercise.math_elements >= 2
    # tqdm separates words with figure spaces (U+2007)
    assert any("fixture progress: 100%" in w["text"].replace("\u2007", " ") for w in chapter.widgets), chapter.widgets
    assert chapter.images >= 2  # the figure and the Colab logo
    assert exercise.solutions == ["ok"]
    assert chapter.colab_links and exercise.colab_links
