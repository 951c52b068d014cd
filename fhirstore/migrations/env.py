"""Alembic environment: runs on a connection handed in by `fhirstore.db.migrate`."""

from alembic import context

from fhirstore.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
