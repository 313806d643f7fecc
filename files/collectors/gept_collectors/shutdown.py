"""Graceful shutdown: SIGTERM/SIGINT stop a collector within seconds, never mid-batch.

The handler sets an event that every wait in the loop watches. Inside an `interruptible()`
block (an HTTP request, which may block for its whole timeout) it also raises StopRequested
at once. Database writes are never interruptible: a batch either commits or rolls back whole,
and the loop stops after it.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


class StopRequested(Exception):  # noqa: N818  (a request, not an error)
    """The process was asked to stop."""


class Shutdown:
    def __init__(self) -> None:
        self.event = threading.Event()
        self._interruptible = 0

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self.event.is_set():
            log.info("received %s, stopping", signal.Signals(signum).name)
        self.event.set()
        if self._interruptible:
            raise StopRequested

    @property
    def stopping(self) -> bool:
        return self.event.is_set()

    def check(self) -> None:
        if self.event.is_set():
            raise StopRequested

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`; raise StopRequested as soon as a stop is asked for."""
        if self.event.wait(max(0.0, seconds)):
            raise StopRequested

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        self.check()
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1
