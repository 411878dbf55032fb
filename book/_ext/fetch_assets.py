"""Fetch the JavaScript the built book needs, from the npm registry, so the HTML works offline.

By default a Jupyter Book page loads MathJax, require.js and the ipywidgets HTML manager from CDNs; with
no network, math shows as raw LaTeX and widget outputs (tqdm progress bars) are blank. ``make assets``
(a prerequisite of ``make book``/``make book-quick``) runs this script, which downloads the pinned
packages below as tarballs straight from the registry with ``requests`` (no Node.js needed, no install
scripts run), checks each tarball against its pinned sha512 integrity, and unpacks the files the book uses
into ``_build/assets``. ``NPM_CONFIG_REGISTRY`` (npm's own setting) points it at a mirror.
``_config.yml`` lists that folder in ``html_static_path`` and points ``mathjax_path`` and
``nb_ipywidgets_js`` at it, so Sphinx copies the files into every build's ``_static`` folder.
Nothing here is committed, and nothing is loaded from a CDN.

Why npm and not PyPI: require.js and ``@jupyter-widgets/html-manager`` are published only on npm, and
PyPI has MathJax 3 only inside unrelated framework plugins; one registry keeps it simple.

Usage: ``python book/_ext/fetch_assets.py [DEST]`` (default ``_build/assets``). Idempotent: when DEST
already holds these versions (``VERSIONS.json``), it does nothing.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

# name, version, sha512 integrity (as the registry publishes it), and which folder of the tarball
# goes where under DEST. html-manager 1.0.15 is the newest 1.0.x, the range ipywidgets 8.1.9 asks for
# (ipywidgets/_version.py: __html_manager_version__ = '^1.0.1'), and it depends on the same
# @jupyter-widgets/base ^6.0.12 and controls ^5.0.13 as the JupyterLab manager shipped with 8.1.9.
PACKAGES = [
    {
        "name": "mathjax",
        "version": "3.2.2",
        "integrity": "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        "copy": {"package/es5": "mathjax"},
    },
    {
        "name": "requirejs",
        "version": "2.3.8",
        "integrity": "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
        "copy": {"package/require.js": "requirejs/require.js"},
    },
    {
        "name": "@jupyter-widgets/html-manager",
        "version": "1.0.15",
        "integrity": "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        "copy": {"package/dist": "html-manager"},
    },
]
# Source maps are large and only help someone debugging the widget manager itself.
SKIP_SUFFIXES = (".map",)
VERSIONS_FILE = "VERSIONS.json"


def _wanted() -> dict[str, str]:
    return {p["name"]: p["version"] for p in PACKAGES}


def _check_integrity(tarball: Path, integrity: str) -> None:
    algo, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{tarball.name}: {algo} digest {digest} does not match the pinned {expected}")


def _extract(tarball: Path, copy: dict[str, str], dest: Path) -> int:
    count = 0
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.endswith(SKIP_SUFFIXES):
                continue
            for src, target in copy.items():
                if member.name == src:
                    out = dest / target
                elif member.name.startswith(src + "/"):
                    out = dest / target / member.name[len(src) + 1:]
                else:
                    continue
                if ".." in Path(member.name).parts:
                    raise SystemExit(f"{tarball.name}: refusing the path {member.name!r}")
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                count += 1
    if count == 0:
        raise SystemExit(f"{tarball.name}: none of {list(copy)} found in the tarball")
    return count


def _registry() -> str:
    registry = os.environ.get("NPM_CONFIG_REGISTRY") or os.environ.get("npm_config_registry")
    return (registry or "https://registry.npmjs.org").rstrip("/")


def tarball_url(name: str, version: str, registry: str) -> str:
    """Where the registry serves a package's tarball: ``<registry>/@scope/pkg/-/pkg-1.0.0.tgz``."""
    return f"{registry}/{name}/-/{name.rpartition('/')[2]}-{version}.tgz"


def _download(url: str, path: Path) -> None:
    import requests

    try:
        with requests.get(url, timeout=60, stream=True) as response:
            response.raise_for_status()
            with open(path, "wb") as f:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    f.write(chunk)
    except requests.RequestException as exc:
        raise SystemExit(f"could not download {url} ({exc}); the book's offline MathJax and widget scripts "
                         "come from the npm registry: check the connection, or set NPM_CONFIG_REGISTRY to "
                         "a mirror") from None


def fetch(dest: Path) -> None:
    versions = dest / VERSIONS_FILE
    if versions.is_file() and json.loads(versions.read_text()) == _wanted():
        print(f"offline assets up to date in {dest}")
        return
    registry = _registry()
    staging = Path(tempfile.mkdtemp(prefix="assets-", dir=dest.parent if dest.parent.is_dir() else None))
    try:
        tree = staging / "tree"
        for p in PACKAGES:
            tarball = staging / f"{p['name'].replace('/', '-')}-{p['version']}.tgz"
            _download(tarball_url(p["name"], p["version"], registry), tarball)
            _check_integrity(tarball, p["integrity"])
            n = _extract(tarball, p["copy"], tree)
            print(f"{p['name']} {p['version']}: {n} files")
        (tree / VERSIONS_FILE).write_text(json.dumps(_wanted(), indent=1) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tree.rename(dest)  # the folder appears complete or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"offline assets written to {dest}")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/assets").resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fetch(target)
