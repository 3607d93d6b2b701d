"""Writing a file all at once: into a temporary file in the same folder, flushed to disk, then renamed over
the final name. A reader (a CI artifact step, a resumed run) never sees half a file, and a failure (a full
disk) leaves the previous file as it was."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, write, mode: int | None = 0o644) -> Path:
    """write(f) on a binary file object, then rename over `path`. `mode` None keeps mkstemp's 0600 (a private
    file); the default 0644 lets other users (e.g. a CI artifact step) read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """`text` as UTF-8 into `path`, all at once (write_atomic)."""
    return write_atomic(path, lambda f: f.write(text.encode("utf-8")))
