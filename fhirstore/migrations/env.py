"""Alembic environment: runs on a connection handed in by `fhirstore.db.migrate`.

One history creates every package's tables. The migrations are written by hand, so nothing
here needs those tables declared: `metadata` holds the store's own, and whatever other
packages' `tables` modules were imported already (tests/fhirstore/test_migrations.py imports
them all to compare the declared schema with the migrated one).
"""

from alembic import context

from fhirstore.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
