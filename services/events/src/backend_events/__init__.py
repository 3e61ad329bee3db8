"""The events service: the organization's consumer of the orchestrator event stream.

One consumer per channel (`consumer`) applies the events to the local replica
(`backend_common.replica`) and decides the Celery work they call for (`policy`, `work`), in one
transaction with the channel's cursor; the outbox (`outbox`) sends that work exactly once. Plans are
pinned to worker replicas (`routing`); `readiness` and `metrics` report the state of the streams.
"""
