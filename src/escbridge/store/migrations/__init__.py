"""Alembic migrations of the store; `escbridge db upgrade` runs them (see store.migrate)."""
