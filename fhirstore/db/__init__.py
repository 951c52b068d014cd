"""Database access: table definitions and engine creation."""
