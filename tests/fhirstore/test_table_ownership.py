"""Each package owns its tables: no module reads or writes another package's tables.

A package declares its tables in its own `tables` module (fhirstore: fhirstore/db/schema.py) on
the one shared metadata; other packages import from there only that metadata, and reach the
store's data through its methods (fhirstore/stored.py, outbox.py, joins.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fhirstore", "events", "subscriptions", "channels", "scheduler", "herald")
# The module each package declares its tables in.
TABLES = {
    "fhirstore": "fhirstore.db.schema",
    "events": "events.tables",
    "subscriptions": "subscriptions.tables",
    "channels": "channels.tables",
    "scheduler": "scheduler.tables",
}


def _imports(path: Path) -> list[tuple[str, set[str]]]:
    """(module, names imported from it) of every import in `path`."""
    found: list[tuple[str, set[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, {a.name for a in node.names}))
        elif isinstance(node, ast.Import):
            found.extend((a.name, set()) for a in node.names)
    return found


def _foreign_table_imports(root: Path, package: str) -> list[str]:
    wrong: list[str] = []
    for path in sorted((root / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for module, names in _imports(path):
            for owner, tables in TABLES.items():
                if owner == package or not module.startswith(tables):
                    continue
                if module == "fhirstore.db.schema" and names == {"metadata"}:
                    continue  # the shared metadata, to declare its own tables on
                wrong.append(f"{path.relative_to(root)} imports {sorted(names)} from {module}")
    return wrong


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_another_packages_tables(package: str) -> None:
    assert _foreign_table_imports(ROOT, package) == []


def test_the_check_finds_a_join_on_the_stores_index(tmp_path: Path) -> None:
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "tables.py").write_text(
        "from fhirstore.db.schema import metadata\nfrom scheduler.tables import x\n"
    )
    (tmp_path / "scheduler" / "join.py").write_text(
        "from fhirstore.db.schema import metadata, search_index\nimport subscriptions.tables\n"
    )
    assert _foreign_table_imports(tmp_path, "scheduler") == [
        "scheduler/join.py imports ['metadata', 'search_index'] from fhirstore.db.schema",
        "scheduler/join.py imports [] from subscriptions.tables",
    ]
