"""Collectors of a value the API cannot give back later (the 1-minute /latest prices, the player
count): one fetch per time bucket, on the grid, whatever the database is doing.

The loop only fetches and validates; each bucket then waits in a bounded in-memory queue that a
writer thread empties in order, oldest first, one transaction per bucket. While the database is
away the writer waits in its reconnect back-off and the loop keeps fetching on schedule; once
the database is back the queue is written in order. The queue holds at most
GEPT_<NAME>_QUEUE_MAX_BUCKETS buckets (plus the one being written): when it is full the OLDEST
waiting bucket is dropped, logged and counted in gept_<c>_dropped_buckets_total. Queued buckets
are in memory only: a stop while the database is away loses them (logged with their count).

gept_<c>_last_success_timestamp_seconds is set when a bucket is written, so a database outage
shows in the stale alert even though every fetch succeeds.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from collections import deque
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions

from . import validate
from .metrics import CollectorMetrics
from .runner import Collector
from .shutdown import Shutdown, StopRequested

log = logging.getLogger(__name__)

# A bucket the database refuses (not a lost connection: a constraint, a timeout) is tried this
# often, a few seconds apart, then dropped and counted.
WRITE_ATTEMPTS = 3


class BucketQueue:
    """A bounded FIFO of fetched buckets shared by the fetch loop and the writer thread."""

    def __init__(self, limit: int, metrics: CollectorMetrics, name: str) -> None:
        if limit < 1:
            raise ValueError("QUEUE_MAX_BUCKETS must be at least 1")
        self.limit = limit
        self.metrics = metrics
        self.name = name
        self._waiting: deque[tuple[datetime, Any]] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._waiting) + self._in_flight

    def _gauge(self) -> None:
        assert self.metrics.queued is not None  # noqa: S101  (narrowing)
        self.metrics.queued.set(len(self._waiting) + self._in_flight)

    def put(self, when: datetime, payload: Any) -> None:
        """Queue a bucket; if the queue is full, drop the oldest waiting one first."""
        with self._cond:
            while len(self._waiting) >= self.limit:
                old, _ = self._waiting.popleft()
                self.drop(old, f"queue full ({self.limit} buckets waiting)")
            self._waiting.append((when, payload))
            self._gauge()
            self._cond.notify()

    def drop(self, when: datetime, why: str) -> None:
        assert self.metrics.dropped is not None  # noqa: S101
        self.metrics.dropped.inc()
        log.warning("%s: bucket %s dropped unwritten: %s", self.name, when.isoformat(), why)

    def take(self, shutdown: Shutdown, poll: float = 0.5) -> tuple[datetime, Any] | None:
        """The oldest bucket (now in flight), waiting for one; None once stopping and empty."""
        with self._cond:
            while not self._waiting:
                if shutdown.stopping:
                    return None
                self._cond.wait(poll)
            self._in_flight += 1
            item = self._waiting.popleft()
            self._gauge()
            return item

    def done(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._gauge()

    def requeue(self, item: tuple[datetime, Any]) -> None:
        """Put an in-flight bucket back at the head (it was not written)."""
        with self._cond:
            self._in_flight -= 1
            self._waiting.appendleft(item)
            self._gauge()


class BucketCollector(Collector):
    """Subclasses fetch one bucket (fetch_bucket) and write it (write_bucket)."""

    grid = True
    queued = True
    default_queue_max = 60  # one hour of 1-minute buckets

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.settings
        self.bucket_seconds = s.get_float("BUCKET_SECONDS", 60.0)
        if self.bucket_seconds <= 0:
            raise ValueError("BUCKET_SECONDS must be > 0")
        limit = s.get_int("QUEUE_MAX_BUCKETS", self.default_queue_max)
        self.queue = BucketQueue(limit, self.metrics, self.name)
        self.write_pause = 2.0  # between attempts at a bucket the database refused
        self._writer: threading.Thread | None = None

    @abstractmethod
    def fetch_bucket(self, when: datetime) -> Any:
        """Fetch and validate the value of the bucket starting at `when` (raises on failure)."""

    @abstractmethod
    def write_bucket(self, cur: psycopg2.extensions.cursor, when: datetime, payload: Any) -> int:
        """Write one bucket in the caller's transaction; return the rows inserted."""

    def bucket_of(self, t: float) -> datetime:
        return validate.utc(t // self.bucket_seconds * self.bucket_seconds)

    def cycle(self) -> None:
        when = self.bucket_of(self.tick or time.time())
        self.queue.put(when, self.fetch_bucket(when))

    # -- the writer thread ----------------------------------------------------------------
    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name=f"{self.name}-writer", daemon=True)
        self._writer.start()

    def stop(self) -> None:
        if self._writer is not None:
            # The writer drains what it can while the database answers, and stops at its first
            # wait (a stop request interrupts every back-off pause).
            self._writer.join(timeout=10)
        left = len(self.queue)
        if left:
            log.warning("%s: stopping with %d fetched bucket(s) not written", self.name, left)

    def write_one(self, when: datetime, payload: Any) -> None:
        """Write one bucket, waiting through a database outage; raises StopRequested."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                inserted = self.db.run(self.write_bucket, when, payload)
            except psycopg2.Error as exc:  # refused by the server, not a lost connection
                if attempt == WRITE_ATTEMPTS:
                    self.queue.drop(when, f"the database refused it {attempt} times ({exc})")
                    return
                log.warning("%s: bucket %s not written (%s); retrying", self.name, when.isoformat(), exc)
                self.shutdown.wait(self.write_pause)
                continue
            self.metrics.rows_inserted.inc(inserted)
            self.metrics.last_success.set(time.time())
            return

    def _write_loop(self) -> None:
        while True:
            item = self.queue.take(self.shutdown)
            if item is None:
                return
            try:
                self.write_one(*item)
            except StopRequested:
                self.queue.requeue(item)
                return
            except Exception:  # noqa: BLE001  (a bug: keep the bucket's slot, log, go on)
                log.exception("%s: writing bucket %s failed unexpectedly", self.name, item[0].isoformat())
                self.queue.drop(item[0], "unexpected error (see the traceback above)")
            self.queue.done()
