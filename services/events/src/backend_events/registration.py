"""Registers this organization on the orchestrator, in every channel it serves.

The orchestrator keys organizations by (id, channel), so each channel needs its own registration.
ALREADY_EXISTS means an earlier start did it: registration is idempotent. Until the orchestrator
answers, the call is retried with backoff (the reference retries every second, forever).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from backend_common.logging import get_logger
from backend_common.orchestrator import (
    AlreadyExistsError,
    OrchestratorClient,
    OrchestratorError,
    backoff_delay,
)

logger = get_logger("backend_events.registration")


def register_organization(
    client: OrchestratorClient,
    address: str,
    *,
    deadline_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Register on the client's channel; True if this call created it, False if it already existed.

    Raises the last orchestrator error once `deadline_seconds` have passed (never, when None).
    """
    start = time.monotonic()
    attempt = 1
    while True:
        try:
            client.register_organization(address=address)
        except AlreadyExistsError:
            logger.info("organization already registered", channel=client.channel)
            return False
        except OrchestratorError as error:
            elapsed = time.monotonic() - start
            if deadline_seconds is not None and elapsed >= deadline_seconds:
                raise
            delay = backoff_delay(attempt, initial=0.5, maximum=10.0)
            logger.warning(
                "organization registration failed, retrying",
                channel=client.channel,
                status=error.status.name,
                retry_in_seconds=round(delay, 2),
            )
            attempt += 1
            sleep(delay)
        else:
            logger.info("organization registered", channel=client.channel, address=address)
            return True
