"""Build the published book as `make book` does, check what it holds, and load every page in
headless Chromium.

The build stages the sources with tinyqwen.course.stage_book, so every chapter shows its reader
edition (solutions collapsed, hidden tests removed), taken from the notebooks the notebook test
executed (conftest.executed): nothing is executed twice. The static checks (links, hidden tests,
scripts from a CDN, Colab links) need no browser. The page checks need Chromium and chromedriver
and are skipped, with the reason, without them; .ci/run installs Debian's chromium and
chromium-driver. The test is offline: MathJax and the widget manager ship with the book
(book/_ext/offline_assets.py). A full-page screenshot of every chapter, typeset math, figures and
progress bars included, lands in _build/screenshots/ (NN_name-1.png, -2.png, ... from the top).
"""

from __future__ import annotations

import base64
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import nbformat
import pytest

from conftest import ROOT, book_repository, executed, read_nb, toc_files, toc_notebooks

pytestmark = pytest.mark.browser

STAGE = ROOT / "_build" / "book-test-src"
SHOTS = ROOT / "_build" / "screenshots"
VENDOR = ROOT / "_build" / "vendor"
# A page's screenshot comes in parts of this height (Chromium captures at most about 16,384).
SHOT_HEIGHT = 8000


def _browser() -> tuple[str, str] | None:
    binary = next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(b)
        ),
        None,
    )
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@pytest.fixture(scope="module")
def built_book() -> Path:
    from tinyqwen.course import stage_book

    stage_book(ROOT, STAGE, executed={p.name: executed(p).nb for p in toc_notebooks()})
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run(
        [str(jb), "build", str(STAGE), "-W", "-n", "--keep-going"], capture_output=True, text=True
    )
    assert proc.returncode == 0, (
        f"the book build has warnings or errors:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    )
    return STAGE / "_build" / "html"


class _Page(HTMLParser):
    """Links, ids, external scripts and stylesheets, and the text of one HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.hrefs, self.ids, self.loads, self.text = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "script" and a.get("src"):
            self.loads.append(a["src"])
        if tag == "link" and "stylesheet" in (a.get("rel") or "") and a.get("href"):
            self.loads.append(a["href"])

    def handle_data(self, data):
        self.text.append(data)


@functools.cache
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _pages(html: Path) -> list[Path]:
    return [p for p in sorted(html.rglob("*.html")) if "_static" not in p.parts]


def test_internal_links_resolve(built_book):
    broken = []
    for page in _pages(built_book):
        for href in _parse(page).hrefs:
            url = urlparse(href)
            if url.scheme or href.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(built_book)} -> {href}")
            elif url.fragment and target.suffix == ".html":
                if url.fragment not in _parse(target).ids:
                    broken.append(f"{page.relative_to(built_book)} -> {href} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken[:30])


def test_no_page_loads_a_script_or_stylesheet_from_a_cdn(built_book):
    if shutil.which("npm") is None and not VENDOR.exists():
        pytest.skip("npm is needed once to fetch MathJax and the widget manager into _build/vendor")
    remote = sorted(
        {
            f"{page.relative_to(built_book)}: {src}"
            for page in _pages(built_book)
            for src in _parse(page).loads
            if urlparse(src).scheme or src.startswith("//")
        }
    )
    assert not remote, "pages load from the network (the book must work offline):\n" + "\n".join(
        remote[:20]
    )
    page = built_book / "notebooks" / f"{toc_notebooks()[0].stem}.html"
    assert any(s.startswith("../_static/mathjax/") for s in _parse(page).loads), (
        "MathJax is not served from the book's static files"
    )


def _flat(text: str) -> str:
    return " ".join(text.split())


def _hidden_lines() -> dict[str, set[str]]:
    """Chapter -> the lines of its hidden tests that no reader edition shows (not even as part
    of a longer line) and that are long enough to be told apart from ordinary code."""
    from tinyqwen.course import (
        BEGIN_HIDDEN,
        END_HIDDEN,
        MIN_LEAK_CHARS,
        is_graded,
        reader_edition,
        region_lines,
    )

    notebooks = {path.name: read_nb(path) for path in toc_notebooks()}
    visible = "\n".join(
        _flat(cell.source) for nb in notebooks.values() for cell in reader_edition(nb).cells
    )
    return {
        name: {
            line
            for cell in nb.cells
            if is_graded(cell)
            for line in map(_flat, region_lines(cell.source, BEGIN_HIDDEN, END_HIDDEN))
            if len(line) >= MIN_LEAK_CHARS and not line.startswith("#") and line not in visible
        }
        for name, nb in notebooks.items()
    }


def test_no_hidden_test_reaches_the_book(built_book):
    hidden = _hidden_lines()
    assert any(hidden.values()), "no chapter has hidden tests: this test would prove nothing"
    texts = {}
    for path in toc_notebooks():
        page = built_book / "notebooks" / f"{path.stem}.html"
        texts[page] = page.read_text(encoding="utf-8") + unescape("".join(_parse(page).text))
        source = built_book / "_sources" / "notebooks" / path.name
        texts[source] = "\n".join(c.source for c in nbformat.read(source, as_version=4).cells)
    found = []
    for where, text in texts.items():
        if "BEGIN HIDDEN TESTS" in text:
            found.append(f"{where.relative_to(built_book)}: BEGIN HIDDEN TESTS")
        flat = _flat(text)
        found += [
            f"{where.relative_to(built_book)}: {line!r} (a hidden test of {name})"
            for name, lines in hidden.items()
            for line in lines
            if line in flat
        ]
    assert not found, "hidden tests are published:\n" + "\n".join(found[:20])


def test_colab_button_and_badge_open_the_student_edition(built_book):
    from tinyqwen.course import STUDENT_BRANCH, colab_url

    repo, _ = book_repository()
    for path in toc_notebooks():
        hrefs = _parse(built_book / "notebooks" / f"{path.stem}.html").hrefs
        colab = [h for h in hrefs if "colab.research.google.com/github" in h]
        expected = colab_url(repo, STUDENT_BRANCH, path.name)
        assert len(colab) >= 2 and set(colab) == {expected}, (
            f"{path.name}: the launch button and the badge should both open {expected}, "
            f"found {colab}"
        )
        assert repo in hrefs, f"{path.name}: no repository button linking to {repo}"


@pytest.fixture(scope="module")
def browser(built_book):
    if _browser() is None:
        pytest.skip(
            "no headless Chromium: install Debian's chromium and chromium-driver to run the page checks"
        )
    pytest.importorskip("selenium", reason="pip install selenium (in the test extra)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(built_book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    binary, driver_path = _browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver, f"http://127.0.0.1:{server.server_address[1]}/"
    driver.quit()
    server.shutdown()


def _own_errors(driver, base: str) -> list[str]:
    """SEVERE console messages, except failed loads of external resources (this test is offline)."""
    out = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        urls = re.findall(r"https?://[^\s\"')]+", entry["message"])
        if urls and not any(u.startswith(base) for u in urls):
            continue
        out.append(entry["message"])
    return out


WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) { done(false); return; }
MathJax.startup.promise.then(() => done(true)).catch(() => done(false));
"""
# Resolves with the number of widget views rendered once as many exist as the page declares.
WAIT_FOR_WIDGETS = """
const done = arguments[arguments.length - 1];
const wanted = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length;
const count = () => document.querySelectorAll('.jupyter-widgets.widget-hbox, .widget-hbox').length;
const start = Date.now();
(function poll() {
  if (count() >= wanted || Date.now() - start > 20000) { done([wanted, count()]); return; }
  setTimeout(poll, 100);
})();
"""
VISIBLE_TEXT = """
const c = document.querySelector('main').cloneNode(true);
c.querySelectorAll('pre, code, mjx-container, .highlight, script, style').forEach(e => e.remove());
return c.textContent;
"""
# TeX that MathJax should have replaced: delimiters, environments, or $…$ around a command.
RAW_TEX = re.compile(r"\\\[|\\\(|\$\$|\\begin\{|(?<![\\\w])\$[^$\n]{0,80}?\\[a-zA-Z]+[^$\n]*?\$")


def _screenshots(driver, name: str) -> None:
    """The whole page, as Chromium's DevTools capture it, in parts of at most SHOT_HEIGHT
    pixels: <name>-1.png from the top, then <name>-2.png, ..."""
    for old in SHOTS.glob(f"{name}-*.png"):
        old.unlink()
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    width, height = int(size["width"]), int(size["height"])
    for k, top in enumerate(range(0, height, SHOT_HEIGHT), start=1):
        clip = {"x": 0, "y": top, "width": width, "height": min(SHOT_HEIGHT, height - top)}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
        )
        (SHOTS / f"{name}-{k}.png").write_bytes(base64.b64decode(shot["data"]))


@pytest.mark.parametrize("page", toc_files())
def test_page_in_chromium(browser, page):
    driver, base = browser
    driver.get(urljoin(base, f"{page}.html"))
    n_math = driver.execute_script("return document.querySelectorAll('main .math').length")
    if n_math:
        assert driver.execute_async_script(WAIT_FOR_MATHJAX), f"{page}: MathJax did not start"
        untypeset = driver.execute_script(
            "return [...document.querySelectorAll('main .math')]"
            ".filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80));"
        )
        assert not untypeset, (
            f"{page}: {len(untypeset)} of {n_math} formulas not typeset: {untypeset[:5]}"
        )
        errors = driver.execute_script(
            "return [...document.querySelectorAll('mjx-merror')].map(e => e.getAttribute('data-mjx-error') || e.textContent);"
        )
        assert not errors, f"{page}: MathJax could not typeset: {errors[:5]}"
    raw = RAW_TEX.findall(driver.execute_script(VISIBLE_TEXT))
    assert not raw, f"{page}: raw TeX left in the text: {raw[:5]}"
    wanted, rendered = driver.execute_async_script(WAIT_FOR_WIDGETS)
    assert rendered >= wanted, f"{page}: {rendered} of {wanted} widgets (progress bars) rendered"
    errors = _own_errors(driver, base)
    assert not errors, f"{page}: console errors: {errors}"
    broken = driver.execute_script(
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);"
    )
    assert not broken, f"{page}: images that did not load: {broken}"
    if page.startswith("notebooks/"):
        badge = driver.execute_script(
            "return [...document.images].filter(i => i.src.endsWith('colab-badge.svg'))"
            ".map(i => [i.src.startsWith(location.origin), i.naturalWidth]);"
        )
        assert badge and all(local and width > 0 for local, width in badge), (
            f"{page}: the Colab badge image should load from the book itself: {badge}"
        )
        n_figures = driver.execute_script(
            "return [...document.querySelectorAll('.cell_output img')].filter(i => i.naturalWidth > 0).length"
        )
        assert n_figures > 0, f"{page}: no figure rendered from the executed notebook"
        n_code = driver.execute_script(
            "return document.querySelectorAll('div.cell_input pre').length"
        )
        n_copy = driver.execute_script(
            "return document.querySelectorAll('div.cell_input button.copybtn').length"
        )
        assert n_code > 0 and n_copy == n_code, (
            f"{page}: {n_copy} copy buttons for {n_code} code cells"
        )
        SHOTS.mkdir(parents=True, exist_ok=True)
        _screenshots(driver, Path(page).name)
