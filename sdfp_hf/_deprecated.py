"""Deprecated import paths: a name that moved to another module stays importable from its old one.

`__getattr__ = moved(__name__, {"name": "new.module"})` in the old module makes `from old import name`
work for one more release, with a `FutureWarning` that names the new place. The new module is imported
by name when the old name is first asked for, never at import time: these aliases are the only
references that run against the direction of the package's layers, and they go in the next release.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["moved"]


def moved(module: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that resolves each of `names` from its new module, with a `FutureWarning`.

    Args:
        module (`str`): the old module's name (its `__name__`).
        names (`dict[str, str]`): moved name -> the module that now holds it.
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"`{module}.{name}` moved to `{names[name]}.{name}` in sdfp-hf 0.2; import it from there "
            "(the old path goes in 0.3)",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(names[name]), name)

    return __getattr__
