"""How the generated files (`python -m ditformat`) write JSON data."""
from __future__ import annotations

import json


def compact_json(value, level: int = 0) -> str:
    """JSON for the generated files: one member a line, but a list or object on one line where it fits in 100
    characters (a reader sees a field's whole spec at once)."""
    flat = json.dumps(value)
    if not isinstance(value, (dict, list)) or len(flat) <= 100:
        return flat
    pad = " " * (level + 1)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {compact_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
    return "[\n" + ",\n".join(pad + compact_json(v, level + 1) for v in value) + "\n" + " " * level + "]"
