"""Alembic migrations of the store's schema (run by `herald serve` at start, or `herald migrate`)."""
