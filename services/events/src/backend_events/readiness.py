"""The state of each channel's event stream, and the readiness file that reports it.

The file (`/tmp/ready` by default, the chart's `cat /tmp/ready` probe) exists while every channel's
stream is subscribed; it holds the state of each stream as JSON. While any stream is being
(re)connected it is absent, so the consumer shows not ready.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from backend_events import metrics

WRITE_INTERVAL_SECONDS = 1.0

State = Literal["connecting", "streaming", "reconnecting", "stopped"]


@dataclass(frozen=True)
class StreamState:
    state: State = "connecting"
    last_event_id: str = ""
    lag_seconds: float | None = None
    reconnects: int = 0
    error: str | None = None
    since: str = ""


class Readiness:
    def __init__(self, channels: list[str], path: str | None) -> None:
        self._path = Path(path) if path else None
        self._lock = threading.Lock()
        self._states = {channel: StreamState(since=_now()) for channel in channels}
        self._written_at = 0.0
        self._write()

    def snapshot(self) -> dict[str, StreamState]:
        with self._lock:
            return dict(self._states)

    @property
    def ready(self) -> bool:
        with self._lock:
            return all(state.state == "streaming" for state in self._states.values())

    def streaming(self, channel: str, last_event_id: str) -> None:
        self._set(channel, state="streaming", last_event_id=last_event_id, error=None)

    def progressed(self, channel: str, last_event_id: str, lag_seconds: float) -> None:
        with self._lock:
            self._states[channel] = replace(
                self._states[channel], last_event_id=last_event_id, lag_seconds=round(lag_seconds, 6)
            )
            # Rewriting the file for every batch would cost more than a small batch: once a second.
            if time.monotonic() - self._written_at >= WRITE_INTERVAL_SECONDS:
                self._write()

    def reconnecting(self, channel: str, error: str) -> None:
        with self._lock:
            reconnects = self._states[channel].reconnects + 1
        self._set(channel, state="reconnecting", error=error, reconnects=reconnects)

    def stopped(self, channel: str) -> None:
        self._set(channel, state="stopped")

    def _set(self, channel: str, **changes: object) -> None:
        with self._lock:
            current = self._states[channel]
            changed = replace(current, **changes)  # type: ignore[arg-type]
            if changed.state != current.state:
                changed = replace(changed, since=_now())
            self._states[channel] = changed
            metrics.STREAM_UP.labels(channel=channel).set(1 if changed.state == "streaming" else 0)
            self._write()

    def _write(self) -> None:
        """Called with the lock held."""
        self._written_at = time.monotonic()
        if self._path is None:
            return
        if not all(state.state == "streaming" for state in self._states.values()):
            self._path.unlink(missing_ok=True)
            return
        content = json.dumps({channel: asdict(state) for channel, state in self._states.items()}, indent=2)
        # Written aside then renamed: a probe never reads half a file.
        temporary = self._path.with_name(f".{self._path.name}.{os.getpid()}")
        temporary.write_text(content + "\n")
        temporary.replace(self._path)

    def remove(self) -> None:
        with self._lock:
            if self._path is not None:
                self._path.unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(UTC).isoformat()
