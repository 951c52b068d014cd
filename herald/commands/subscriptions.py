"""`herald subscriptions unloaded`: the stored Subscriptions (and SubscriptionTopics) that Herald
cannot load, with the reason, for an operator after an upgrade or a change of a topic or of the
settings. It reads the database of a running Herald (and creates none), and judges what is
stored as this version's `herald serve` would: with its built-in topics and these settings."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from herald.commands.common import DatabaseOpt, console, load_settings, open_database, store_of

if TYPE_CHECKING:
    from herald.settings import Settings
    from subscriptions import SubscriptionRegistry

subscriptions_app = typer.Typer(
    help="Stored Subscriptions, as Herald sees them (see docs/operations.md).",
    no_args_is_help=True,
)


@subscriptions_app.command("unloaded")
def unloaded(database_url: DatabaseOpt = None) -> None:
    """List the stored Subscriptions Herald cannot load (they are in error and matched against
    nothing), and the SubscriptionTopics it cannot load, each with the reason."""
    settings = load_settings(database_url)
    open_database(settings, existing=True)
    lines = asyncio.run(_listing(settings))
    console.print(
        "\n".join(lines) if lines else "every stored Subscription and SubscriptionTopic loads",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


async def _listing(settings: Settings) -> list[str]:
    from herald.channel_support import channel_support
    from subscriptions import SubscriptionRegistry

    async with store_of(settings) as store:
        registry = SubscriptionRegistry(store, channels=channel_support(settings))
        await registry.load()
        await registry.assume_builtin_topics()
        return _blocks(registry)


def _blocks(registry: SubscriptionRegistry) -> list[str]:
    """One block per Subscription and per topic: reasons are long, and may hold brackets."""
    lines = []
    for topic in sorted(registry.unloaded_topics.values(), key=lambda t: t.topic_id):
        lines += [
            f"SubscriptionTopic/{topic.topic_id} ({topic.url or 'no url'}): cannot be loaded",
            f"  {topic.problem}",
        ]
    for item in sorted(registry.unloaded.values(), key=lambda u: u.subscription_id):
        spec = item.spec
        owner = spec.owner.subject if spec.owner is not None else "no owner"
        where = item.element
        if item.parameters:
            where += f" (parameters {', '.join(item.parameters)})"
        lines += [
            f"Subscription/{spec.id} ({spec.status}, owner {owner}, topic {spec.topic_url}): "
            f"{item.kind}",
            f"  at {where}",
            f"  {item.problem}",
        ]
    return lines
