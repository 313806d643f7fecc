"""The collector loop shared by every collector: fetch -> validate -> write -> record metrics,
once per interval, aligned to the wall clock (interval boundary + offset), until SIGTERM.

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


class Collector(ABC):
    """Subclasses set `name` (and `windows` for gap-filled window series) and write cycle()."""

    name: str = ""
    windows: bool = False
    default_interval: float = 60.0
    default_offset: float = 0.0

    def __init__(self, settings: config.Settings | None = None) -> None:
        self.settings = settings or config.load(
            self.name, default_interval=self.default_interval, default_offset=self.default_offset
        )
        self.shutdown = Shutdown()
        self.metrics = metrics.CollectorMetrics(self.name, windows=self.windows)
        self.http = HttpClient(self.settings, self.metrics, self.shutdown)
        self.db = Database(self.settings, self.metrics, self.shutdown)

    @abstractmethod
    def cycle(self) -> None:
        """One collection: fetch, validate, write (each batch one transaction)."""

    def run_once(self) -> bool:
        """One timed cycle; True when it succeeded. StopRequested propagates."""
        started = time.monotonic()
        try:
            self.cycle()
        except (FetchError, ValidationError, DatabaseUnavailable) as exc:
            log.warning("%s cycle failed: %s", self.name, exc)
            return False
        except StopRequested:
            raise
        except Exception:  # noqa: BLE001  (a bug or an unexpected server error: log it, keep the loop alive)
            log.exception("%s cycle failed unexpectedly", self.name)
            return False
        finally:
            self.metrics.duration.observe(time.monotonic() - started)
        self.metrics.last_success.set(time.time())
        return True

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
        try:
            while True:
                self.run_once()
                now = time.time()
                self.shutdown.wait(next_tick(now, self.settings.interval, self.settings.offset) - now)
        except StopRequested:
            log.info("%s collector stopped", self.name)
        finally:
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
