"""Public surfaces that load on first use: what a package's `__init__` offers other packages.

Each package names its public surface in `__all__` and imports those names under
`TYPE_CHECKING` (for the type checker and the reader). At run time its module `__getattr__` is a
`LazyExports`, which imports a name from its home module the first time someone asks for it.
Two reasons, both measured on this code base: an eager `__init__` would make the package import
everything it offers (the CLI would load the whole store to read its settings), and
`fhirstore.access` offers modules that need `fhirstore.store` while the store needs
`fhirstore.access.boundary`, a cycle an eager `__init__` cannot load.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from importlib import import_module


class LazyExports:
    """The module `__getattr__` of `package`: `homes` maps each home module to the names it
    gives the package. A home equal to `package` itself offers submodules by name (the way
    `from package import submodule` reads)."""

    def __init__(self, package: str, homes: Mapping[str, Iterable[str]]) -> None:
        self._package = package
        self._home_of = {name: home for home, names in homes.items() for name in names}

    @property
    def names(self) -> frozenset[str]:
        """Every name this surface offers."""
        return frozenset(self._home_of)

    def __call__(self, name: str) -> object:
        home = self._home_of.get(name)
        if home is None:
            raise AttributeError(f"module {self._package!r} has no attribute {name!r}")
        if home == self._package:
            value: object = import_module(f"{home}.{name}")
        else:
            value = getattr(import_module(home), name)
        setattr(sys.modules[self._package], name, value)  # asked once, then a plain attribute
        return value
