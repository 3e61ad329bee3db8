"""standalone_orchestrator."""
