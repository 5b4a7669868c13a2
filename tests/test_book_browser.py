"""Build the book from the executed notebooks and load every page in headless Chromium.

Skipped (with the reason) when no Chromium/Chrome and chromedriver are installed; .ci/run
installs Debian's chromium and chromium-driver so CI runs it. The build reuses the notebooks the
notebook test executed (conftest.executed), so nothing is executed twice. MathJax is served
locally (npm's mathjax@3, fetched once into _build/vendor) because the test runs offline.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import nbformat
import pytest
import yaml

from conftest import ROOT, book_repository, executed, toc_files, toc_notebooks

pytestmark = pytest.mark.browser

STAGE = ROOT / "_build" / "browser-src"
HTML = STAGE / "_build" / "html"
VENDOR = ROOT / "_build" / "vendor"
SHOTS = ROOT / "_build" / "screenshots"
MATHJAX_VERSION = "3.2.2"


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


def _mathjax() -> Path:
    target = VENDOR / "mathjax" / "es5"
    if not (target / "tex-mml-chtml.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is needed once to fetch MathJax for the offline browser test")
        VENDOR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--pack-destination", str(VENDOR)],
            check=True,
            capture_output=True,
        )
        with tarfile.open(VENDOR / f"mathjax-{MATHJAX_VERSION}.tgz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/es5/")]
            tar.extractall(VENDOR / "tmp", members=members, filter="data")
        shutil.rmtree(VENDOR / "mathjax", ignore_errors=True)
        (VENDOR / "tmp" / "package").rename(VENDOR / "mathjax")
    return target


@pytest.fixture(scope="module")
def built_book():
    if _browser() is None:
        pytest.skip(
            "no headless Chromium: install Debian's chromium and chromium-driver to run the browser test"
        )
    pytest.importorskip("selenium", reason="pip install selenium (in the test extra)")
    mathjax = _mathjax()
    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True)
    for name in ("_toc.yml", "book", "benchmarks/results"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, STAGE / name)
    (STAGE / "notebooks").mkdir()
    for path in toc_notebooks():
        nbformat.write(executed(path).nb, STAGE / "notebooks" / path.name)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config["sphinx"]["config"]["mathjax_path"] = "mathjax/tex-mml-chtml.js"
    (STAGE / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run(
        [str(jb), "build", str(STAGE), "-W", "-n", "--keep-going"], capture_output=True, text=True
    )
    assert proc.returncode == 0, (
        f"the book build has warnings or errors:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    )
    shutil.copytree(mathjax, HTML / "_static" / "mathjax", dirs_exist_ok=True)
    return HTML


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_internal_links_resolve(built_book):
    pages = {p: _parse(p) for p in built_book.rglob("*.html") if "_static" not in p.parts}
    broken = []
    for page, parsed in pages.items():
        for href in parsed.hrefs:
            url = urlparse(href)
            if url.scheme or href.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(built_book)} -> {href}")
            elif url.fragment and target.suffix == ".html":
                if url.fragment not in pages.get(target, _parse(target)).ids:
                    broken.append(f"{page.relative_to(built_book)} -> {href} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken[:30])


@pytest.fixture(scope="module")
def browser(built_book):
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
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
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
if (!window.MathJax || !MathJax.startup) { done(false); return; }
MathJax.startup.promise.then(() => done(true)).catch(() => done(false));
"""

RAW_MATH = r"(?<![\\\w])\$\$?[^$\n]{1,80}?\\[a-zA-Z]+[^$\n]*?\$\$?"


@pytest.mark.parametrize("page", toc_files())
def test_page_in_chromium(browser, page):
    driver, base = browser
    url = urljoin(base, f"{page}.html")
    driver.get(url)
    errors = _own_errors(driver, base)
    assert not errors, f"{page}: console errors: {errors}"
    source = (ROOT / f"{page}.md") if (ROOT / f"{page}.md").exists() else (ROOT / f"{page}.ipynb")
    if "$" in source.read_text(encoding="utf-8"):
        assert driver.execute_async_script(WAIT_FOR_MATHJAX), f"{page}: MathJax did not start"
        assert (
            driver.execute_script("return document.querySelectorAll('mjx-container').length") > 0
        ), f"{page}: no math was typeset"
        text = driver.execute_script(
            "const c = document.querySelector('main').cloneNode(true);"
            "c.querySelectorAll('pre, code, mjx-container, .highlight').forEach(e => e.remove());"
            "return c.innerText;"
        )
        raw = re.findall(RAW_MATH, text)
        assert not raw, f"{page}: raw TeX left unrendered: {raw[:5]}"
    broken = driver.execute_script(
        "return [...document.images].filter(i => i.src.startsWith(location.origin) &&"
        " !(i.complete && i.naturalWidth > 0)).map(i => i.src);"
    )
    assert not broken, f"{page}: images that did not load: {broken}"
    if page.startswith("notebooks/"):
        repo, branch = book_repository()
        owner_repo = repo.removeprefix("https://github.com/")
        colab = f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{page}.ipynb"
        hrefs = driver.execute_script(
            "return [...document.querySelectorAll('a')].map(a => a.href);"
        )
        assert hrefs.count(colab) >= 2, (
            f"{page}: expected the launch button and the badge to open {colab}"
        )
        assert all(h == colab for h in hrefs if "colab.research.google.com/github" in h)
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
    if page in (toc_files()[0], *[f for f in toc_files() if f.startswith("notebooks/")][:1]):
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / (page.replace("/", "_") + ".png")))
