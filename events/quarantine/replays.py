"""Replays: feed a quarantined message to its consumer group again, once asked to.

Every process runs `run_replays`: it takes the replays asked for (`herald quarantine replay`,
`POST [base]/$quarantine-replay`) of the groups this process consumes, hands each message to
that group's handler alone (no other group sees it again), and marks the record resolved when
the handler succeeds, or keeps it (with the new error) when it fails. It also keeps the
`herald_quarantine_open` gauge in step with the table.
"""

from __future__ import annotations

import asyncio
import logging

from events.bus import Bus
from events.metrics import QUARANTINE_OPEN, QUARANTINE_REPLAYS
from events.quarantine.records import Quarantine
from fhirstore import Periodic, failed_at

log = logging.getLogger(__name__)


async def replay_requested(quarantine: Quarantine, bus: Bus) -> int:
    """Replay what was asked for of the groups this process consumes; how many resolved."""
    consumers = bus.consumers()
    resolved = 0
    for record, message in await quarantine.claim_replays(list(consumers)):
        handler = consumers[(record.topic, record.consumer_group)]
        try:
            await handler([message])
        except asyncio.CancelledError:
            raise
        except Exception as error:
            QUARANTINE_REPLAYS.labels(record.consumer_group, "failed").inc()
            log.warning(
                "quarantine: replay of %d (%s, %s) failed again: %s at %s",
                record.id,
                record.consumer_group,
                record.key,
                type(error).__name__,
                failed_at(error),
            )
            await quarantine.failed_again(record, error)
            continue
        await quarantine.resolved(record)
        QUARANTINE_REPLAYS.labels(record.consumer_group, "resolved").inc()
        log.info(
            "quarantine: %d (%s, %s) replayed and resolved",
            record.id,
            record.consumer_group,
            record.key,
        )
        resolved += 1
    return resolved


async def run_replays(quarantine: Quarantine, bus: Bus, interval: float) -> None:
    """Every `interval` seconds, and at once when this process asks: replays and the gauge."""
    groups = {group for _, group in bus.consumers()}

    async def replays() -> None:
        await replay_requested(quarantine, bus)
        counts = await quarantine.open_counts()
        for group in groups | counts.keys():
            QUARANTINE_OPEN.labels(group).set(counts.get(group, 0))

    def failed(error: Exception, _retry_in: float) -> None:
        log.warning(
            "quarantine: replays failed (%s at %s); trying again",
            type(error).__name__,
            failed_at(error),
        )

    await Periodic(
        "quarantine replays",
        replays,
        interval=interval,
        clock=quarantine.clock,
        failed=failed,
        woken_by=quarantine.requested,
    ).run()
