"""backend_common."""
