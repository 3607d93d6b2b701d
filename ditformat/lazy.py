"""A package's public names, imported from their modules on first use: `import dit_model` or `import runtime_py`
loads neither torch nor wgpu until a name that needs it is asked for."""
from __future__ import annotations

import importlib


def lazy_attributes(package: str, table: dict[str, str], namespace: dict):
    """(__getattr__, __dir__) of a package whose names live in the modules of table ({name: module}: a module of
    the package, or a dotted absolute name); a name, once imported, is kept in namespace (the package's globals)."""
    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = table[name]
        value = getattr(importlib.import_module(module if "." in module else f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(table))
    return __getattr__, __dir__
