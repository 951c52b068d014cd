"""Public surfaces that load on first use: what a package's `__init__` offers other packages.

A package names its public surface in `__all__` and imports those names under `TYPE_CHECKING`,
which is what the type checker and the reader see. At run time its module `__getattr__` is a
`LazyExports`: the first time someone asks for a name, it finds that import in the package's
`__init__` and imports the name from its home module. Two reasons, both met in this code base:
an eager `__init__` would make the package import everything it offers (the CLI would load the
whole store to read its settings), and `fhirstore.access` offers modules that need
`fhirstore.store` while the store needs `fhirstore.access.boundary`, a cycle an eager `__init__`
cannot load.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path


class LazyExports:
    """The module `__getattr__` of `package`, serving what its `__init__` imports under
    `TYPE_CHECKING` (`from package import submodule` offers that submodule)."""

    def __init__(self, package: str) -> None:
        self._package = package
        self._homes: dict[str, str] | None = None

    @property
    def homes(self) -> Mapping[str, str]:
        """Each name offered, with the module it comes from."""
        if self._homes is None:
            self._homes = _typing_imports(Path(str(sys.modules[self._package].__file__)))
        return self._homes

    def __call__(self, name: str) -> object:
        home = self.homes.get(name)
        if home is None:
            raise AttributeError(f"module {self._package!r} has no attribute {name!r}")
        if home == self._package:
            value: object = import_module(f"{home}.{name}")
        else:
            value = getattr(import_module(home), name)
        setattr(sys.modules[self._package], name, value)  # asked once, then a plain attribute
        return value


def _typing_imports(init: Path) -> dict[str, str]:
    homes: dict[str, str] = {}
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    homes.update((alias.name, statement.module) for alias in statement.names)
    return homes
