"""A started Herald has the UCUM unit registry loaded: no write or search pays its load."""

from __future__ import annotations

from pathlib import Path

from fhirstore.search import ucum
from tests.support.herald import running_herald


async def test_a_started_herald_has_the_ucum_registry_loaded(tmp_path: Path) -> None:
    ucum._registry.cache_clear()  # as in a fresh process
    assert not ucum.loaded()
    async with running_herald(f"sqlite+aiosqlite:///{tmp_path / 'herald.db'}"):
        assert ucum.loaded()
