"""Data access: plain functions over SQLAlchemy sessions, one module per domain."""
