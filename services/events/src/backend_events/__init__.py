"""backend_events."""
