"""Pytest plugins shared by every package's tests: real Postgres databases, a real S3 server."""
