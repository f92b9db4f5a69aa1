"""Package names loaded on first use (PEP 562), so that a package's light modules import without its heavy ones."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: name -> the submodule it lives in, imported when first asked for and
    then kept in the package's namespace."""
    def __getattr__(name: str):
        if name in homes:
            module = importlib.import_module(package)
            value = getattr(importlib.import_module(f".{homes[name]}", package), name)
            setattr(module, name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
