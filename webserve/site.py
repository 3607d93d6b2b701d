"""`ditweb site BUNDLE OUT_DIR`: the page and a bundle as a static folder, written atomically.

Layout (what `ditweb serve` serves too):  OUT_DIR/index.html, OUT_DIR/*.js|css,
OUT_DIR/bundle/manifest.json, OUT_DIR/bundle/<every file the manifest lists>.
All URLs in the page are relative, so the folder works under any path of any static host.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .files import WEB_DIR, SiteError, check_bundle, web_files

MARKER = ".ditweb-site"     # lets a re-run replace a folder this verb wrote, and only such a folder


def write_site(bundle: Path, out_dir: Path) -> list[Path]:
    """Returns the files written (relative to out_dir)."""
    bundle, out_dir = Path(bundle), Path(out_dir)
    bundle_files = check_bundle(bundle)
    page_files = web_files()
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MARKER).exists())):
        raise SiteError(f"{out_dir} exists and is not a folder written by `ditweb site`; choose a new or empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target, then swap: a failed or interrupted run never leaves a half-written site
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        written = []
        for rel in page_files:
            shutil.copyfile(WEB_DIR / rel, tmp / rel)
            written.append(rel)
        for rel in bundle_files:
            dst = tmp / "bundle" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle / rel, dst)
            written.append(Path("bundle") / rel)
        (tmp / MARKER).write_text("written by `ditweb site`; safe to replace with a new run\n")
        os.chmod(tmp, 0o755)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return written
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
