"""backend_migrations."""
