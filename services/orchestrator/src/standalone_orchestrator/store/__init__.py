"""Data-access layer: plain functions over a SQLAlchemy connection, returning protobuf assets.

Reads are scoped to a channel; existence checks that guard global key uniqueness are not.
"""
