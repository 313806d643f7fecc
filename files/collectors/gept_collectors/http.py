"""HTTP client: descriptive User-Agent, timeouts, retries with exponential back-off and jitter.

Each request is counted once in gept_<c>_requests_total{status}: the HTTP status code as a
string ("200", "429", "500", ...), "timeout", "error" (connection refused, reset, ...), or
"invalid" (a 200 whose body failed parsing or validation). 429, 5xx, timeouts and connection
errors are retried; other 4xx are not (asking again will not help).
"""

from __future__ import annotations

import gzip
import http.client
import logging
import random
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from .config import Settings
from .metrics import CollectorMetrics
from .shutdown import Shutdown
from .validate import ValidationError, sample

log = logging.getLogger(__name__)
T = TypeVar("T")


class FetchError(Exception):
    """The request failed after its retries (or with a status not worth retrying)."""


class HttpClient:
    def __init__(self, settings: Settings, metrics: CollectorMetrics, shutdown: Shutdown) -> None:
        self.settings = settings
        self.metrics = metrics
        self.shutdown = shutdown
        # No proxies from the environment: the URLs are configuration, nothing else.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def url(self, path: str, **params: Any) -> str:
        """An API URL under the configured base URL."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return f"{self.settings.api_base_url}/{path.lstrip('/')}" + (f"?{query}" if query else "")

    def _once(self, url: str) -> bytes:
        request = urllib.request.Request(  # noqa: S310  (http/https from configuration)
            url,
            headers={
                "User-Agent": self.settings.user_agent,
                "Accept-Encoding": "gzip",
            },
        )
        timeout = self.settings.http_timeout
        with self.shutdown.interruptible(), self._opener.open(request, timeout=timeout) as resp:
            body = resp.read()
            if resp.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
        return body

    def fetch(self, url: str, parse: Callable[[bytes], T]) -> T:
        """GET `url` and return `parse(body)`; retry transient failures; count every attempt."""
        retries = max(0, self.settings.http_retries)
        for attempt in range(retries + 1):
            retry_after = 0.0
            try:
                body = self._once(url)
            except urllib.error.HTTPError as exc:
                status = str(exc.code)
                retryable = exc.code == 429 or exc.code >= 500
                try:
                    retry_after = float(exc.headers.get("Retry-After") or 0)
                except ValueError:
                    retry_after = 0.0
            except TimeoutError:
                status, retryable = "timeout", True
            except urllib.error.URLError as exc:
                timed_out = isinstance(exc.reason, TimeoutError)
                status, retryable = ("timeout" if timed_out else "error"), True
            except (OSError, http.client.HTTPException):
                status, retryable = "error", True
            else:
                try:
                    result = parse(body)
                except ValidationError as exc:
                    self.metrics.requests.labels("invalid").inc()
                    self.metrics.errors.labels("validation").inc()
                    log.warning("invalid answer from %s: %s; sample: %s", url, exc, sample(body))
                    raise
                self.metrics.requests.labels("200").inc()
                return result
            self.metrics.requests.labels(status).inc()
            if not retryable or attempt == retries:
                self.metrics.errors.labels("http").inc()
                raise FetchError(f"GET {url}: {status} after {attempt + 1} attempt(s)")
            delay = min(self.settings.http_backoff_max, self.settings.http_backoff_base * 2**attempt)
            delay = max(retry_after, delay * random.uniform(0.5, 1.5))  # noqa: S311  (jitter, not crypto)
            log.info("GET %s: %s, retry %d/%d in %.1fs", url, status, attempt + 1, retries, delay)
            self.shutdown.wait(delay)
        raise AssertionError("unreachable")
