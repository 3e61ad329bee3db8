"""Business rules of the orchestrator, one module per asset, over a `Request`."""
