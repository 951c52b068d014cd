"""Alembic migrations (applied by `herald serve` at start, or `herald migrate`)."""
