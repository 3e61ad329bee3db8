"""Values made once per process, on first use (database engines, clients, worker contexts)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    """Holds one value per process: a parent's, inherited through fork, is never reused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: tuple[int, T] | None = None

    def get(self, make: Callable[[], T]) -> T:
        pid = os.getpid()
        with self._lock:
            if self._owner is None or self._owner[0] != pid:
                self._owner = (pid, make())
            return self._owner[1]
