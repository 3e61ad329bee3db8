"""Generated orchestrator stubs: run `make protos` after changing `protos/`."""
