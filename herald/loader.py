"""`herald load`: bulk-load resources and Bundles (JSON, NDJSON) through the store.

Resources with an id are PUT (create-or-update), without one POSTed. Transaction and batch
Bundles are processed as the API would; other Bundles (collection, searchset) contribute their
entries' resources. Resources are written in batches through the same write path as the API, so
every one of them reaches the change stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhirstore import FhirError, Store, fhirjson, new_id, process_batch, process_transaction
from fhirstore.db import PendingWrite
from fhirstore.validation import require_id, validate_resource

log = logging.getLogger(__name__)

_BATCH = 200


@dataclass
class LoadReport:
    loaded: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, where: str, why: str) -> None:
        self.failures.append((where, why))


@dataclass(slots=True)
class _Item:
    where: str
    resource: Any


def discover(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.suffix in (".json", ".ndjson") and p.is_file()
            )
        else:
            files.append(path)
    return files


def read_items(path: Path) -> Iterator[_Item]:
    """Resources in a file; unreadable content becomes an item carrying the parse error."""
    raw = path.read_bytes()
    if path.suffix == ".ndjson":
        for number, line in enumerate(raw.splitlines(), start=1):
            if line.strip():
                yield _parse(f"{path}:{number}", line)
    else:
        yield _parse(str(path), raw)


def _parse(where: str, raw: bytes) -> _Item:
    try:
        return _Item(where, fhirjson.loads(raw, max_depth=fhirjson.MAX_DEPTH))
    except fhirjson.JSONDecodeError as exc:
        return _Item(where, exc)


class Loader:
    def __init__(self, store: Store, on_progress: Callable[[int], None] = lambda _n: None) -> None:
        self.store = store
        self.report = LoadReport()
        self._pending: list[tuple[str, PendingWrite]] = []
        self._on_progress = on_progress

    async def load_file(self, path: Path) -> None:
        for item in read_items(path):
            await self._load_item(item)
        await self.flush()

    async def _load_item(self, item: _Item) -> None:
        body = item.resource
        if isinstance(body, Exception):
            self.report.fail(item.where, f"not valid JSON: {body}")
            return
        if isinstance(body, dict) and body.get("resourceType") == "Bundle":
            await self._load_bundle(item.where, body)
            return
        self._queue(item.where, body)
        if len(self._pending) >= _BATCH:
            await self.flush()

    async def _load_bundle(self, where: str, bundle: dict[str, Any]) -> None:
        kind = bundle.get("type")
        if kind in ("transaction", "batch"):
            await self.flush()
            try:
                process = process_transaction if kind == "transaction" else process_batch
                result = await process(self.store, bundle)
            except Exception as error:  # one bad Bundle must not stop the load
                self.report.fail(where, _reason(where, error))
                return
            self._count_bundle_result(where, result)
            return
        for index, entry in enumerate(bundle.get("entry") or []):
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                self._queue(f"{where}#entry[{index}]", entry["resource"])

    def _count_bundle_result(self, where: str, result: dict[str, Any]) -> None:
        for index, entry in enumerate(result.get("entry", [])):
            response = entry.get("response", {})
            if str(response.get("status", "")).startswith("2"):
                self.report.loaded += 1
            else:
                outcome = response.get("outcome", {}).get("issue", [{}])[0]
                self.report.fail(f"{where}#entry[{index}]", outcome.get("diagnostics", "failed"))
        self._on_progress(len(result.get("entry", [])))

    def _queue(self, where: str, body: Any) -> None:
        try:
            resource = validate_resource(None, body)
            resource_id = resource.get("id") or new_id()
            require_id(resource_id)
        except FhirError as error:
            self.report.fail(where, error.diagnostics)
            self._on_progress(1)
            return
        self._pending.append((where, PendingWrite(resource["resourceType"], resource_id, resource)))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            await self._write([w for _, w in pending])
            self.report.loaded += len(pending)
        except Exception:  # retried one by one below
            # Find the culprit(s): retry one by one so the good ones still load.
            for where, write in pending:
                try:
                    await self._write([write])
                    self.report.loaded += 1
                except Exception as error:  # recorded as this item's failure
                    self.report.fail(where, _reason(where, error))
        self._on_progress(len(pending))

    async def _write(self, writes: list[PendingWrite]) -> None:
        async with self.store.write_transaction() as conn:
            await self.store.write_batch(conn, writes)


def _reason(where: str, error: Exception) -> str:
    """What a failure report says; an unexpected error is also logged with its traceback."""
    if isinstance(error, FhirError):
        return error.diagnostics
    log.error("loading %s failed unexpectedly", where, exc_info=error)
    return f"internal error ({type(error).__name__}: {error}); the details are in the log"
