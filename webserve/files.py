"""Which files make up the page and a bundle, and a cheap check of a bundle before publishing it.

The browser verifies every hash itself (web/bundle.js); this check only stops `serve`/`site`
from publishing a folder that is obviously not a bundle, with a one-line error naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path

from ditformat.errors import DitwebError
from runtime_py.verify import sha256_file

# The page: package data `webserve.page` in an installed wheel (pyproject.toml maps web/ there), web/ in a checkout
PACKAGED_WEB_DIR = Path(__file__).resolve().parent / "page"
WEB_DIR = PACKAGED_WEB_DIR if (PACKAGED_WEB_DIR / "index.html").is_file() else Path(__file__).resolve().parent.parent / "web"
PAGE_SUFFIXES = {".html", ".js", ".css", ".svg", ".png", ".ico", ".wasm"}
MANIFEST = "manifest.json"


class SiteError(DitwebError):
    """A bundle or output folder that cannot be served or published (one line, names the path)."""


def web_files() -> list[Path]:
    """The page: web/*.{html,js,css,...}, relative to WEB_DIR."""
    if not (WEB_DIR / "index.html").is_file():
        raise SiteError(f"the page is missing: {WEB_DIR / 'index.html'} not found (an installed ditweb holds it in "
                        f"{PACKAGED_WEB_DIR}: reinstall the wheel; a source checkout, in web/)")
    return sorted(p.relative_to(WEB_DIR) for p in WEB_DIR.iterdir() if p.is_file() and p.suffix in PAGE_SUFFIXES)


def read_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise SiteError(f"bundle folder {bundle} does not exist (make one with `ditweb export CKPT {bundle}`)")
    if not path.is_file():
        raise SiteError(f"{path}: not found; a bundle folder holds manifest.json, weights and kernels/")
    try:
        manifest = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SiteError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise SiteError(f"{path}: the top level must be a JSON object")
    return manifest


def bundle_hashes(manifest: dict, bundle: Path) -> dict[str, str]:
    """{relative path: sha256 hex} as the manifest lists them (the files a browser will fetch)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise SiteError(f"{bundle / MANIFEST}: field 'files' must map each bundle file to its sha256")
    out = {}
    for rel, entry in files.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else entry
        if not isinstance(digest, str) or len(digest) != 64:
            raise SiteError(f"{bundle / MANIFEST}: files[{rel!r}] has no sha256 hex digest")
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts or rel == MANIFEST:
            raise SiteError(f"{bundle / MANIFEST}: files[{rel!r}] is not a plain relative path inside the bundle")
        out[rel] = digest.lower()
    return out


def check_bundle(bundle: Path) -> list[str]:
    """Every file the manifest names exists and hashes as listed. Returns the relative paths to publish,
    manifest first."""
    manifest = read_manifest(bundle)
    rels = []
    for rel, digest in bundle_hashes(manifest, bundle).items():
        path = bundle / rel
        if not path.is_file():
            raise SiteError(f"{path}: listed in manifest.json but missing")
        got = sha256_file(path)
        if got != digest:
            raise SiteError(f"{path}: sha256 {got[:16]}... does not match manifest.json ({digest[:16]}...)")
        rels.append(rel)
    return [MANIFEST] + rels
