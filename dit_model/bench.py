"""Result tables: benchmarks and evaluations print a table and save it under bench/results/.
The `ditweb bench TARGET` verb that runs them is ditweb/bench.py (tooling above the runtimes)."""
from __future__ import annotations

import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def format_table(header: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in header]] + [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def save_text(path: Path, text: str) -> Path:
    """A result table, written atomically (a half-written table never replaces a good one)."""
    from .checkpoint import atomic_write
    return atomic_write(path, lambda f: f.write(text.encode()), "the result table", ValueError)


def publish(name: str, title: str, header: list[str], rows: list[list], notes: str, out_dir) -> Path:
    """Print a result table with when and where it was measured, and save it as OUT_DIR/NAME.md."""
    stamp = time.strftime("%Y-%m-%d %H:%M")
    text = (f"# {title}\n\n{stamp}, {platform.machine()}, {platform.processor() or platform.platform()}\n\n"
            f"{format_table(header, rows)}\n\n{notes}\n")
    print(text)
    path = save_text(Path(out_dir) / f"{name}.md", text)
    print(f"saved {path}")
    return path
