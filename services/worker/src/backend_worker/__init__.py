"""backend_worker."""
