"""The store: SQLAlchemy models, engine and sessions, Alembic migrations. Knows nothing of GraphQL."""
