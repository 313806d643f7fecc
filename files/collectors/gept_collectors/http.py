"""HTTP client: descriptive User-Agent, timeouts, retries with exponential back-off and jitter.

Every attempt is counted once in gept_<c>_requests_total{status}: the HTTP status code as a
string ("200", "429", "500", ...), "timeout", "error" (connection refused, reset, ...), or
"invalid" (a 200 whose body failed parsing or validation). 429, 5xx, timeouts, connection
errors and invalid 200s (usually a truncated body) are retried, up to GEPT_HTTP_RETRIES times;
other 4xx are not (asking again will not help). Pauses: full jitter (backoff.full_jitter,
never above GEPT_HTTP_BACKOFF_MAX_SECONDS), or the server's Retry-After when it asks for longer.

gept_<c>_errors_total{kind="http"|"validation"} counts a request only once it has failed for
good (out of retries, or not retryable): what the cycle saw. A fault that a retry healed shows
only in requests_total, which is why the error-ratio alert is computed from requests_total.
"""

from __future__ import annotations

import http.client
import logging
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

from .backoff import full_jitter
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
                body = zlib.decompress(body, wbits=31)  # gzip framing
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
                    log.warning("invalid answer from %s: %s; sample: %s", url, exc, sample(body))
                    if attempt == retries:
                        self.metrics.errors.labels("validation").inc()
                        raise
                    self._pause(url, "invalid", attempt, retries, 0.0)
                    continue
                self.metrics.requests.labels("200").inc()
                return result
            self.metrics.requests.labels(status).inc()
            if not retryable or attempt == retries:
                self.metrics.errors.labels("http").inc()
                raise FetchError(f"GET {url}: {status} after {attempt + 1} attempt(s)")
            self._pause(url, status, attempt, retries, retry_after)
        raise AssertionError("unreachable")

    def _pause(self, url: str, status: str, attempt: int, retries: int, retry_after: float) -> None:
        s = self.settings
        delay = max(retry_after, full_jitter(attempt, s.http_backoff_base, s.http_backoff_max))
        log.info("GET %s: %s, retry %d/%d in %.2fs", url, status, attempt + 1, retries, delay)
        self.shutdown.wait(delay)
