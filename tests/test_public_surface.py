"""Each package's public surface: `__all__` lists what it offers other packages, and every name
in it is there (held here the way httpx holds its exported members)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path
from types import ModuleType

import pytest

from fhirstore.surface import LazyExports

ROOT = Path(__file__).resolve().parent.parent
# The packages whose surface other packages use; `fhirstore.validation` defines its surface in
# its `__init__`, the others offer names that live in their modules.
LAZY = [
    "fhirstore",
    "fhirstore.access",
    "fhirstore.api",
    "fhirstore.db",
    "fhirstore.search",
    "events",
    "events.bus",
    "events.quarantine",
    "subscriptions",
    "channels",
    "channels.websocket",
    "scheduler",
    "scheduler.timing",
    "herald",
]
SURFACES = [*LAZY, "fhirstore.validation"]


def _homes(package: str) -> Mapping[str, str]:
    """Each name the package's `__init__` imports under `TYPE_CHECKING`, with its home."""
    offered = import_module(package).__getattr__
    assert isinstance(offered, LazyExports)
    return offered.homes


@pytest.mark.parametrize("package", SURFACES)
def test_all_lists_each_name_once(package: str) -> None:
    listed = import_module(package).__all__
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("package", LAZY)
def test_the_names_offered_are_the_names_listed(package: str) -> None:
    assert set(_homes(package)) == set(import_module(package).__all__)


@pytest.mark.parametrize("package", LAZY)
def test_each_listed_name_is_the_object_of_its_home_module(package: str) -> None:
    module = import_module(package)
    for name, home in _homes(package).items():
        found = getattr(module, name)
        if home == package:
            assert isinstance(found, ModuleType)
            assert found.__name__ == f"{package}.{name}"
        else:
            assert found is getattr(import_module(home), name), f"{package}.{name}"


@pytest.mark.parametrize("package", LAZY)
def test_no_offered_name_is_hidden_by_a_submodule_of_the_same_name(package: str) -> None:
    # Importing `package.x` sets the attribute `x` to that module, whatever `x` was before.
    folder = ROOT.joinpath(*package.split("."))
    for name, home in _homes(package).items():
        if home != package:
            assert not (folder / f"{name}.py").exists(), f"{package}.{name}"
            assert not (folder / name / "__init__.py").exists(), f"{package}.{name}"


def test_the_validation_surface_is_defined_in_its_package() -> None:
    source = ROOT.joinpath("fhirstore", "validation", "__init__.py").read_text()
    defined = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined.update(target.id for target in node.targets if isinstance(target, ast.Name))
    module = import_module("fhirstore.validation")
    assert set(module.__all__) <= defined
    for name in module.__all__:
        getattr(module, name)


def test_a_name_not_offered_is_an_attribute_error_naming_it() -> None:
    import fhirstore

    with pytest.raises(AttributeError, match="module 'fhirstore' has no attribute 'Stroe'"):
        fhirstore.Stroe  # noqa: B018


def _fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("package", SURFACES)
def test_the_whole_surface_imports_in_a_fresh_interpreter(package: str) -> None:
    # In a fresh interpreter the package is the first thing imported, so an import cycle
    # between the surface and the modules it offers shows here.
    result = _fresh(f"from {package} import *")
    assert result.returncode == 0, result.stderr


def test_importing_the_cli_loads_neither_the_store_nor_the_database_driver() -> None:
    # `herald --help` stays quick: a package surface loads what it offers only when asked.
    result = _fresh(
        "import sys, herald.cli\n"
        "loaded = {'fhirstore.store', 'sqlalchemy', 'fhirpathpy'} & set(sys.modules)\n"
        "assert not loaded, loaded"
    )
    assert result.returncode == 0, result.stderr


# Modules other packages import by name rather than through a package surface, and why.
PUBLIC_MODULES = {
    "fhirstore.wire": "the one module naming every wire contract (topics, groups, headers, URLs)",
    "fhirstore.db.upsert": "offered from `fhirstore.db`, `upsert` would be hidden by its module",
    "fhirstore.surface": "what every package's `__init__` uses to offer its surface",
}
PRODUCT = ["fhirstore", "events", "subscriptions", "channels", "scheduler", "herald"]


def _cross_package_imports() -> list[tuple[str, str, str]]:
    """(importing file, module imported from, name) for each `from X import N` in product code
    where X belongs to another top-level package."""
    found = []
    for top in PRODUCT:
        for path in sorted(ROOT.joinpath(top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    other = node.module.split(".")[0]
                    if other in PRODUCT and other != top:
                        where = str(path.relative_to(ROOT))
                        found += [(where, node.module, alias.name) for alias in node.names]
    return found


def _around_surfaces(imports: list[tuple[str, str, str]]) -> list[str]:
    surfaces = {package: set(import_module(package).__all__) for package in SURFACES}
    return [
        f"{where}: from {module} import {name}"
        for where, module, name in imports
        if module not in PUBLIC_MODULES and name not in surfaces.get(module, ())
    ]


def test_packages_import_each_other_through_their_surfaces() -> None:
    stray = _around_surfaces(_cross_package_imports())
    assert not stray, "import these through a package's __all__:\n" + "\n".join(stray)


def test_the_surface_check_flags_an_import_that_goes_around_a_surface() -> None:
    through = ("channels/x.py", "fhirstore", "Store")
    around = ("channels/x.py", "fhirstore.store", "Store")
    assert _around_surfaces([through]) == []
    assert _around_surfaces([around]) == ["channels/x.py: from fhirstore.store import Store"]
