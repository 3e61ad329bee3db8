"""backend_scheduler."""
