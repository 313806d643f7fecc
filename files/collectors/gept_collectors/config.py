"""Configuration from the environment (systemd reads /etc/gept/collectors.env into it).

Shared settings are GEPT_<KEY>; a collector's own are GEPT_<NAME>_<KEY> (NAME = LATEST,
FIVEMIN, HOURLY, NEWS, PLAYERCOUNT, ITEMS, DASHBOARD). No secret has a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_USER_AGENT = "gept-collectors/1.0 (GePT market-data host; set GEPT_USER_AGENT to name a contact)"

# The real endpoints; the demo host points these at the bundled osrs_standin instead.
DEFAULT_API_BASE_URL = "https://prices.runescape.wiki/api/v1/osrs"
DEFAULT_NEWS_RSS_URL = "https://secure.runescape.com/m=news/latest_news.rss?oldschool=true"
DEFAULT_WIKI_RC_RSS_URL = "https://oldschool.runescape.wiki/w/Special:RecentChanges?feed=rss"
DEFAULT_HOMEPAGE_URL = "https://oldschool.runescape.com/"

# Metrics ports (group_vars gept_ports.collector_<name>): 9201-9206, clear of node_exporter's 9100.
DEFAULT_METRICS_PORTS = {
    "latest": 9201,
    "fivemin": 9202,
    "hourly": 9203,
    "news": 9204,
    "playercount": 9205,
    "items": 9206,
}


class ConfigError(ValueError):
    """A required setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    """Everything a collector reads from its environment."""

    name: str
    env: Mapping[str, str] = field(repr=False)
    db_host: str = "127.0.0.1"
    db_port: int = 6432
    db_name: str = "gept"
    db_user: str = "gept_collector"
    db_password: str = field(default="", repr=False)
    db_sslmode: str = "prefer"
    db_statement_timeout_ms: int = 30000
    db_backoff_max: float = 30.0
    user_agent: str = DEFAULT_USER_AGENT
    api_base_url: str = DEFAULT_API_BASE_URL
    http_timeout: float = 20.0
    http_retries: int = 4
    http_backoff_base: float = 1.0
    http_backoff_max: float = 60.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    interval: float = 60.0
    offset: float = 0.0
    log_level: str = "INFO"

    # -- typed access to the collector's own keys (GEPT_<NAME>_<KEY>, then GEPT_<KEY>) ----
    def raw(self, key: str, default: str | None = None) -> str | None:
        own = self.env.get(f"GEPT_{self.name.upper()}_{key}")
        if own not in (None, ""):
            return own
        shared = self.env.get(f"GEPT_{key}")
        return shared if shared not in (None, "") else default

    def get_str(self, key: str, default: str) -> str:
        value = self.raw(key, default)
        return default if value is None else value

    def get_float(self, key: str, default: float) -> float:
        value = self.raw(key)
        try:
            return default if value is None else float(value)
        except ValueError as exc:
            raise ConfigError(f"GEPT_[{self.name.upper()}_]{key}={value!r} is not a number") from exc

    def get_int(self, key: str, default: int) -> int:
        return int(self.get_float(key, default))


def load(
    name: str,
    env: Mapping[str, str] | None = None,
    default_interval: float = 60.0,
    default_offset: float = 0.0,
) -> Settings:
    """Build the settings of collector `name` from `env` (default: os.environ)."""
    env = dict(os.environ if env is None else env)
    probe = Settings(name=name, env=env)
    password = probe.raw("DB_PASSWORD")
    if not password:
        raise ConfigError("GEPT_DB_PASSWORD is not set (it comes from the vault via collectors.env)")
    agent = probe.get_str("USER_AGENT", DEFAULT_USER_AGENT)
    if len(agent) < 12 or "/" not in agent:
        raise ConfigError("GEPT_USER_AGENT must be descriptive (name/version and a contact)")
    return Settings(
        name=name,
        env=env,
        db_host=probe.get_str("DB_HOST", "127.0.0.1"),
        db_port=probe.get_int("DB_PORT", 6432),
        db_name=probe.get_str("DB_NAME", "gept"),
        db_user=probe.get_str("DB_USER", "gept_collector"),
        db_password=password,
        db_sslmode=probe.get_str("DB_SSLMODE", "prefer"),
        db_statement_timeout_ms=probe.get_int("DB_STATEMENT_TIMEOUT_MS", 30000),
        db_backoff_max=probe.get_float("DB_BACKOFF_MAX_SECONDS", 30.0),
        user_agent=agent,
        api_base_url=probe.get_str("API_BASE_URL", DEFAULT_API_BASE_URL).rstrip("/"),
        http_timeout=probe.get_float("HTTP_TIMEOUT_SECONDS", 20.0),
        http_retries=probe.get_int("HTTP_RETRIES", 4),
        http_backoff_base=probe.get_float("HTTP_BACKOFF_BASE_SECONDS", 1.0),
        http_backoff_max=probe.get_float("HTTP_BACKOFF_MAX_SECONDS", 60.0),
        metrics_host=probe.get_str("METRICS_HOST", "127.0.0.1"),
        metrics_port=probe.get_int("METRICS_PORT", DEFAULT_METRICS_PORTS.get(name, 0)),
        interval=probe.get_float("INTERVAL_SECONDS", default_interval),
        offset=probe.get_float("OFFSET_SECONDS", default_offset),
        log_level=probe.get_str("LOG_LEVEL", "INFO").upper(),
    )
