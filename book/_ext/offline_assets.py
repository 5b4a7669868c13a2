"""Sphinx extension: ship the book's scripts with the book, so it works without a network.

Two kinds of pages load scripts that Sphinx and MyST-NB take from a CDN by default: MathJax 3
(every page with a formula) and the Jupyter widget manager with RequireJS (pages whose executed
notebook shows widgets, such as tqdm progress bars). At build time each npm package below is
fetched once with ``npm pack`` into a vendor folder (config value ``offline_vendor_dir``; a
relative path is taken from the book's source folder; the staged builds use ``_build/vendor`` of
the repository), the files a page can load are copied into the book's static files, and
``mathjax_path`` / ``nb_ipywidgets_js`` point at those copies. The built HTML then loads no script
from a CDN. Where npm is missing or the registry cannot be reached (and nothing is cached yet),
that script stays on its CDN and the build says so on stderr (a printed warning, not a Sphinx
warning, so a ``-W`` build still succeeds).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NpmAsset:
    """Files of an npm package, shipped under ``_static/<folder>/``."""

    package: str
    version: str
    folder: str
    source: str  # the package's folder whose files are shipped
    keep: str  # regular expression: which files of ``source`` (relative paths) are shipped
    entry: str  # the file a page loads

    @property
    def vendored(self) -> str:
        return f"{self.package.replace('@', '').replace('/', '-')}-{self.version}"


# MathJax: the combined component Sphinx loads by default (TeX and MathML in, CommonHTML out) and
# what it loads on demand (TeX extensions, fonts, the menu and its accessibility tools).
MATHJAX = NpmAsset(
    "mathjax",
    "3.2.2",
    "mathjax",
    "es5",
    r"tex-mml-chtml\.js|(a11y|adaptors|input|output|sre|ui)/.+",
    "tex-mml-chtml.js",
)
# The widget manager MyST-NB loads by default (the version matching ipywidgets 8), with its fonts.
WIDGETS = NpmAsset(
    "@jupyter-widgets/html-manager",
    "1.0.6",
    "jupyter-widgets",
    "dist",
    r"embed-amd\.js|[0-9a-f]+\.(woff2?|ttf|eot|svg)",
    "embed-amd.js",
)
REQUIREJS = NpmAsset("requirejs", "2.3.4", "requirejs", "", r"require\.js", "require.js")
# Tells RequireJS where the widget manager lives, so that it finds its fonts there.
STATIC = Path(__file__).parent / "static"
WIDGET_PATHS = "jupyter-widgets-paths.js"


def vendored(vendor: Path, asset: NpmAsset) -> Path:
    """``<vendor>/<name>-<version>``, holding ``<folder>/<entry>``, what it loads, and the
    package's LICENSE.

    Fetched with ``npm pack`` on first use and kept for later builds. Raises ``RuntimeError``
    saying why when it cannot be fetched.
    """
    target = vendor / asset.vendored
    if (target / asset.folder / asset.entry).is_file():
        return target
    if target.exists():
        raise RuntimeError(f"{target} holds no {asset.folder}/{asset.entry}: remove it to refetch")
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed")
    spec = f"{asset.package}@{asset.version}"
    vendor.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-", dir=vendor) as tmp:
        work = Path(tmp)
        try:
            subprocess.run(
                [npm, "pack", spec, "--pack-destination", str(work), "--silent"],
                check=True,
                capture_output=True,
                text=True,
                timeout=300,
                cwd=work,
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"npm pack {spec} failed: {exc.stderr.strip()[-500:]}") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"npm pack {spec} timed out") from None
        (tgz,) = work.glob("*.tgz")
        prefix = f"package/{asset.source}/" if asset.source else "package/"
        staged = work / "staged"
        with tarfile.open(tgz) as tar:
            for member in tar.getmembers():
                rel = member.name.removeprefix(prefix)
                if member.name == "package/LICENSE":
                    rel = "LICENSE"
                elif not (member.name.startswith(prefix) and re.fullmatch(asset.keep, rel)):
                    continue
                if member.isfile():
                    out = staged / asset.folder / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(tar.extractfile(member).read())
        if not (staged / asset.folder / asset.entry).is_file():
            raise RuntimeError(f"{spec} has no {asset.source}/{asset.entry}")
        staged.rename(target)  # complete or absent: a build never sees half a copy
    return target


def _ship(app, config, asset: NpmAsset, cdn: str) -> str | None:
    vendor = Path(config.offline_vendor_dir)
    if not vendor.is_absolute():
        vendor = Path(app.srcdir) / vendor
    try:
        local = vendored(vendor, asset)
    except RuntimeError as exc:
        print(f"warning: {cdn} stays on its CDN, so it fails offline ({exc})", file=sys.stderr)
        return None
    config.html_static_path = [*config.html_static_path, str(local)]
    return f"{asset.folder}/{asset.entry}"


def _use_local_copies(app, config) -> None:
    from myst_nb.core.config import ipywidgets_js_factory
    from sphinx.ext.mathjax import MATHJAX_URL

    if config.mathjax_path == MATHJAX_URL:  # else the book chose its own MathJax
        config.mathjax_path = _ship(app, config, MATHJAX, MATHJAX_URL) or MATHJAX_URL
    if config.nb_ipywidgets_js == ipywidgets_js_factory():  # else the book chose its own
        require = _ship(app, config, REQUIREJS, "RequireJS")
        manager = _ship(app, config, WIDGETS, "the Jupyter widget manager")
        if require and manager:
            config.html_static_path = [*config.html_static_path, str(STATIC)]
            config.nb_ipywidgets_js = {require: {}, WIDGET_PATHS: {}, manager: {}}


def setup(app):
    app.setup_extension("sphinx.ext.mathjax")
    app.setup_extension("myst_nb")
    app.add_config_value("offline_vendor_dir", "_build/vendor", "html", types=[str])
    app.connect("config-inited", _use_local_copies)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
