"""The collector loop shared by every collector: fetch -> validate -> write -> record metrics,
once per interval, aligned to the wall clock (interval boundary + offset), until SIGTERM.

A collector on a grid (`grid = True`: one value per time bucket, e.g. the 1-minute ones) waits
for its first tick instead of starting at once, and schedules each tick from the previous one:
a cycle that overruns its tick is followed at once by the next (late, but in its own bucket),
so no bucket is skipped at start-up or after a slow cycle. Other collectors run their first
cycle at start (the window collectors heal gaps then).

A cycle that fails is logged and counted (by kind) and the loop goes on; it never exits on a
transient failure, so systemd's Restart=on-failure is only for real crashes.
"""

from __future__ import annotations

import logging
import sys
import time
from abc import ABC, abstractmethod

from . import config, metrics
from .db import Database, DatabaseUnavailable
from .http import FetchError, HttpClient
from .shutdown import Shutdown, StopRequested
from .validate import ValidationError

log = logging.getLogger(__name__)


def setup_logging(level: str) -> None:
    # journald adds the time and unit; keep lines short and greppable.
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def next_tick(now: float, interval: float, offset: float) -> float:
    """The next wall-clock time that is `offset` seconds past a multiple of `interval`."""
    base = (now - offset) // interval * interval + offset
    return base + interval if base <= now else base


class Stalled(Exception):  # noqa: N818  (a state, reported to the loop)
    """A cycle that could store nothing new for longer than the collector's stall threshold."""


class Collector(ABC):
    """Subclasses set `name` (and `windows` for gap-filled window series) and write cycle()."""

    name: str = ""
    windows: bool = False
    queued: bool = False  # the bucket collectors' write queue (gept_collectors.buckets)
    grid: bool = False
    default_interval: float = 60.0
    default_offset: float = 0.0

    def __init__(
        self,
        settings: config.Settings | None = None,
        registry: metrics.prometheus_client.CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings or config.load(
            self.name, default_interval=self.default_interval, default_offset=self.default_offset
        )
        self.shutdown = Shutdown()
        self.metrics = metrics.CollectorMetrics(
            self.name,
            windows=self.windows,
            queued=self.queued,
            registry=registry or metrics.prometheus_client.REGISTRY,
        )
        self.http = HttpClient(self.settings, self.metrics, self.shutdown)
        self.db = Database(self.settings, self.metrics, self.shutdown)
        self.tick = 0.0  # the scheduled start of the current cycle (unix time)

    @abstractmethod
    def cycle(self) -> None:
        """One collection: fetch, validate, write (each batch one transaction)."""

    def run_once(self) -> bool:
        """One timed cycle; True when it succeeded. StopRequested propagates."""
        started = time.monotonic()
        try:
            self.cycle()
        except (FetchError, ValidationError, DatabaseUnavailable, Stalled) as exc:
            log.warning("%s cycle failed: %s", self.name, exc)
            return False
        except StopRequested:
            raise
        except Exception:  # noqa: BLE001  (a bug or an unexpected server error: log it, keep the loop alive)
            log.exception("%s cycle failed unexpectedly", self.name)
            return False
        finally:
            self.metrics.duration.observe(time.monotonic() - started)
        if not self.queued:  # a queued collector succeeds when its bucket is written
            self.metrics.last_success.set(time.time())
        return True

    def start(self) -> None:  # noqa: B027  (an optional hook)
        """Called once before the first cycle (the bucket collectors start their writer)."""

    def stop(self) -> None:  # noqa: B027  (an optional hook)
        """Called once after the last cycle."""

    def schedule(self, previous: float | None, now: float) -> float:
        """When the next cycle is due (unix time); `previous` is the last cycle's tick."""
        interval, offset = self.settings.interval, self.settings.offset
        if not self.grid:
            return now if previous is None else next_tick(now, interval, offset)
        if previous is None:
            return next_tick(now, interval, offset)
        due = previous + interval
        current = next_tick(now, interval, offset) - interval  # the newest tick not after now
        if current > due:
            log.warning("%s: %d tick(s) missed by a slow cycle", self.name, round((current - due) / interval))
            due = current
        return due

    def run(self) -> int:
        self.shutdown.install()
        metrics.serve(self.settings.metrics_host, self.settings.metrics_port)
        log.info(
            "%s collector started (interval %.0fs, metrics %s:%d, API %s)",
            self.name,
            self.settings.interval,
            self.settings.metrics_host,
            self.settings.metrics_port,
            self.settings.api_base_url,
        )
        tick = None
        try:
            self.start()
            while True:
                now = time.time()
                tick = self.schedule(tick, now)
                self.shutdown.wait(tick - now)
                self.tick = tick
                self.run_once()
        except StopRequested:
            log.info("%s collector stopped", self.name)
        finally:
            self.stop()
            self.db.close()
        return 0


def main(collector: type[Collector]) -> int:
    """Entry point of every collector script."""
    try:
        settings = config.load(
            collector.name,
            default_interval=collector.default_interval,
            default_offset=collector.default_offset,
        )
    except config.ConfigError as exc:
        print(f"gept-collector-{collector.name}: configuration error: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG: systemd's RestartPreventExitStatus keeps it from looping
    setup_logging(settings.log_level)
    return collector(settings).run()
