"""Root pytest configuration: the shared fixtures of `backend_common.testing`."""

pytest_plugins = [
    "backend_common.testing.postgres",
    "backend_common.testing.seaweedfs",
    "backend_common.testing.registry",
]
