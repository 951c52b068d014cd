"""Database access: the store's tables, the shared metadata and column types every package's
tables use, engine creation, migrations, locks and the write path."""
