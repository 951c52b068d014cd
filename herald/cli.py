"""The `herald` command: one Typer application assembled from the subcommands of
`herald.commands` (serve, relay, migrate, load, reindex, enrol, dead-letters, replay, quarantine,
scheduler, subscriptions, asyncapi, config-doc)."""

from __future__ import annotations

import typer

from herald.commands.documents import asyncapi, config_doc
from herald.commands.enrol import enrol
from herald.commands.letters import dead_letters, quarantine_app, replay
from herald.commands.load import load
from herald.commands.reconcile import reconcile
from herald.commands.reindex import reindex
from herald.commands.service import migrate, relay, scheduler_run, serve
from herald.commands.subscriptions import subscriptions_app

app = typer.Typer(help="Herald: FHIR Subscriptions and CarePlan scheduling.", no_args_is_help=True)
app.command()(serve)
app.command()(relay)
app.command()(migrate)
app.command()(load)
app.command()(reindex)
app.command()(enrol)
app.command("dead-letters")(dead_letters)
app.command()(replay)
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(subscriptions_app, name="subscriptions")
app.command()(asyncapi)
app.command("config-doc")(config_doc)

scheduler_app = typer.Typer(help="The CarePlan scheduler.", no_args_is_help=True)
scheduler_app.command("run")(scheduler_run)
scheduler_app.command("reconcile")(reconcile)
app.add_typer(scheduler_app, name="scheduler")


if __name__ == "__main__":
    app()
