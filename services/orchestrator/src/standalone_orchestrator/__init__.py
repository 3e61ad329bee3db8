"""Standalone orchestrator: the Substra orchestrator gRPC contract served from PostgreSQL.

Layers, from the wire inwards:

* `api`: gRPC adapters; they read the `mspid`/`channel` metadata, open the transaction, call a
  domain function and map its errors to gRPC statuses;
* `domain`: the business rules (permissions, state machines, task registration, events), plain
  functions over a `Request` (one transaction, one requester, one channel, one timestamp);
* `store`: the data-access layer, plain functions over a SQLAlchemy connection;
* `db` and `migrations`: engine, transactions with the per-channel writer lock, schema.
"""

DEFAULT_VERSION = "dev"
