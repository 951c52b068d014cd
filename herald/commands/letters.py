"""What delivery and consumers set aside, for an operator: `herald dead-letters` and
`herald replay` (notifications given up), `herald quarantine list|replay` (changes a consumer
could not process). Each reads the database of a running Herald, so none of them creates one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from herald.commands.common import (
    DatabaseOpt,
    console,
    ledger_of,
    load_settings,
    open_database,
    store_of,
)

if TYPE_CHECKING:
    from events.quarantine import QuarantinedMessage
    from herald.settings import Settings
    from subscriptions import DeadLetter

quarantine_app = typer.Typer(
    help="Changes a consumer could not process, set aside (see docs/operations.md).",
    no_args_is_help=True,
)


def _existing(database_url: str | None) -> Settings:
    settings = load_settings(database_url)
    open_database(settings, existing=True)
    return settings


def dead_letters(
    subscription: Annotated[str | None, typer.Option(help="Only this Subscription id")] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """List notifications given up (past the give-up age, or that could not be built or sent),
    with the reason."""
    settings = _existing(database_url)

    async def main() -> list[DeadLetter]:
        async with ledger_of(settings) as ledger:
            return await ledger.dead_letters(subscription)

    letters = asyncio.run(main())
    table = Table("id", "subscription", "events", "recorded", "replayed", "reason")
    for letter in letters:
        table.add_row(
            str(letter.id),
            letter.subscription_id,
            f"{letter.first_event}-{letter.last_event}",
            letter.recorded_at.isoformat(timespec="seconds"),
            letter.replayed_at.isoformat(timespec="seconds") if letter.replayed_at else "",
            letter.reason,
        )
    console.print(table if letters else "no dead letters")


def replay(
    dead_letter_id: Annotated[int, typer.Argument(help="The id `herald dead-letters` shows")],
    database_url: DatabaseOpt = None,
) -> None:
    """Deliver a dead letter's events again (a running dispatcher picks them up)."""
    settings = _existing(database_url)

    async def main() -> object:
        async with ledger_of(settings) as ledger:
            return await ledger.replay(dead_letter_id, now=datetime.now(UTC))

    if asyncio.run(main()) is None:
        console.print(
            f"[red]no dead letter {dead_letter_id} waiting for a replay[/red]; "
            f"`herald dead-letters` lists them"
        )
        raise typer.Exit(1)
    console.print(f"dead letter {dead_letter_id} will be delivered again")


@quarantine_app.command("list")
def quarantine_list(
    all_: Annotated[bool, typer.Option("--all", help="Also those a replay resolved")] = False,
    consumer: Annotated[
        str | None, typer.Option(help="Only this consumer group, e.g. herald-matcher")
    ] = None,
    database_url: DatabaseOpt = None,
) -> None:
    """List what consumers set aside: which consumer, which change, why."""
    from events.quarantine import Quarantine

    settings = _existing(database_url)

    async def main() -> list[QuarantinedMessage]:
        async with store_of(settings) as store:
            return await Quarantine(store).records(include_resolved=all_, group=consumer)

    records = asyncio.run(main())
    if not records:
        console.print("nothing is quarantined")
    for record in records:  # one block each: reasons are long, and may hold brackets
        console.print(_block(record), markup=False, highlight=False, soft_wrap=True)


def _block(record: QuarantinedMessage) -> str:
    change = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("event", record.event_id),
            ("version", record.version_id),
            ("sequence", record.sequence),
        )
        if value is not None
    )
    resolved = record.resolved_at
    return "\n".join(
        [
            f"#{record.id} {record.status}: {record.consumer_group} on {record.topic}, "
            f"{record.key}" + (f" ({change})" if change else ""),
            f"  recorded {record.recorded_at.isoformat(timespec='seconds')} after "
            f"{record.attempts} tries"
            + (f"; resolved {resolved.isoformat(timespec='seconds')}" if resolved else ""),
            f"  {record.error_class}: {record.reason}",
        ]
    )


@quarantine_app.command("replay")
def quarantine_replay(
    record_id: Annotated[int, typer.Argument(help="The id `herald quarantine list` shows")],
    database_url: DatabaseOpt = None,
) -> None:
    """Feed a quarantined change to its consumer again (a running process of that consumer
    replays it within HERALD_QUARANTINE_REPLAY_SECONDS and marks it resolved if it succeeds)."""
    from events.quarantine import Quarantine

    settings = _existing(database_url)

    async def main() -> QuarantinedMessage | None:
        async with store_of(settings) as store:
            return await Quarantine(store).request_replay(record_id)

    record = asyncio.run(main())
    if record is None:
        console.print(
            f"[red]no quarantined change {record_id} waiting for a replay[/red]; "
            f"`herald quarantine list` lists them"
        )
        raise typer.Exit(1)
    console.print(
        f"quarantined change {record_id} ({record.consumer_group}, {record.key}) will be "
        f"replayed by a running {record.consumer_group}; `herald quarantine list --all` shows "
        f"whether it was resolved",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
