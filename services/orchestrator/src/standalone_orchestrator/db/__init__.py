"""Database access: schema, engine and transactions."""
