"""gRPC adapters: identity from the metadata, one transaction per call, errors to statuses."""
