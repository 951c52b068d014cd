"""The change stream: event model, outbox relay and the bus it is published on."""
