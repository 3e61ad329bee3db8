"""backend_server."""
