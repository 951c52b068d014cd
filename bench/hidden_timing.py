"""Hidden vs missing: how long a patient token waits for another patient's resource, by its
size, next to an id that does not exist (the baseline, measured in the same run).

Hidden is decided from the search index, never from the stored body (docs/access.md), so the
ratio should stay near 1x as the hidden resource grows. Herald runs in this process (ASGI, auth
on); each cell is the median of `--rounds` requests.

    .venv/bin/python -m bench.hidden_timing                # SQLite and PostgreSQL, ~1 min
    .venv/bin/python -m bench.hidden_timing --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.harness import BACKENDS, Databases, note, parse_backends, ratio
from fhirstore.clock import FrozenClock
from tests.support.herald import running_herald
from tests.support.tokens import NOW, bearer, jwt_settings, token

ADMIN = bearer(token(sub="admin-1"))
ALICE = bearer(token(sub="alice", scope="patient/*.cruds", patient="p1"))
SIZES = (1_000, 1_000_000, 4_000_000)  # bytes of free text in the hidden Observation


def _observation(obs_id: str, subject: str, text: str = "") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"text": "blood pressure"},
        "subject": {"reference": subject},
    }
    if text:
        resource["note"] = [{"text": text}]
    return resource


async def _medians(
    client: httpx.AsyncClient, method: str, ids: tuple[str, str], rounds: int
) -> tuple[float, float]:
    """Median seconds of Alice's `method` on each of the Observations `ids`, the two asked in
    turn so that load on the machine falls on both alike."""
    spent: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for obs_id, times in zip(ids, spent, strict=True):
            mine = _observation(obs_id, "Patient/p1") if method == "PUT" else None
            started = time.perf_counter()
            answer = await client.request(
                method, f"/Observation/{obs_id}", json=mine, headers=ALICE
            )
            times.append(time.perf_counter() - started)
            assert answer.status_code == 404, answer.text
    return statistics.median(spent[0]), statistics.median(spent[1])


async def _measure(url: str, rounds: int) -> list[tuple[int, str, float, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        async with running_herald(
            url,
            clock=FrozenClock(NOW),
            **jwt_settings(Path(folder)),
            subscriptions=False,
            scheduler=False,
            max_body_bytes=8_000_000,
        ) as (_, client):
            await client.put("/Patient/p2", json={"resourceType": "Patient", "id": "p2"},
                             headers=ADMIN)  # fmt: skip
            for size in SIZES:
                hidden = f"h{size}"
                body = _observation(hidden, "Patient/p2", "x" * size)
                answer = await client.put(f"/Observation/{hidden}", json=body, headers=ADMIN)
                assert answer.status_code == 201, answer.text
                for name, method in (("read", "GET"), ("update", "PUT"), ("delete", "DELETE")):
                    ids = (hidden, "m" + hidden[1:])
                    seen, missing = await _medians(client, method, ids, rounds)
                    rows.append((size, name, seen, missing))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=50, help="requests per cell")
    args = parser.parse_args()
    table = Table(title="Hidden vs missing (patient token), median per request")
    for column in ("backend", "hidden size", "interaction", "missing", "hidden", "hidden/missing"):
        table.add_column(column, justify="right")
    databases = Databases()
    try:
        for backend in parse_backends(args.backends):
            try:
                url = databases.fresh(backend)
            except Exception as error:  # a backend that is not available is skipped
                note(f"{backend} skipped: {error}")
                continue
            for size, name, seen, missing in asyncio.run(_measure(url, args.rounds)):
                table.add_row(
                    backend,
                    f"{size:,} B",
                    name,
                    f"{missing * 1000:.2f} ms",
                    f"{seen * 1000:.2f} ms",
                    ratio(seen, missing),
                )
    finally:
        databases.close()
    Console().print(table)


if __name__ == "__main__":
    main()
