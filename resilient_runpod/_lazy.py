"""Public names imported on first use (PEP 562), for the packages' ``__init__`` modules.

The pytest plugin lives in this package, and pytest loads it in every test run of every
project that installs the package: importing a package must not import its modules, and
with them httpx, structlog, tenacity and tomlkit, until one of its names is used.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for *package* that imports each name from its home.

    *homes* maps a public name to the module defining it, relative to *package*; a name
    whose home is the submodule of that name is the submodule itself.
    """
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> Any:  # noqa: N807 -- the module hook's name
        try:
            home = homes[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module = importlib.import_module(home, package)
        value = module if module.__name__ == f"{package}.{name}" else getattr(module, name)
        namespace[name] = value  # found by normal lookup from now on
        return value

    return __getattr__
