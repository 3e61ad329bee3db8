"""registry_prepopulate."""
