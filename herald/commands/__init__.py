"""The `herald` subcommands, one module per area: `service` (serve, relay, scheduler run,
migrate), `load`, `letters` (dead letters and the quarantine), `reconcile`, `subscriptions`
(those that cannot be loaded), `documents` (asyncapi, config-doc). `common` holds what they
share: settings, the database they use and the one-line exit on a start-up problem.
`herald.cli` assembles them into one command."""
