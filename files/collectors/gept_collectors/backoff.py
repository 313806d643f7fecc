"""Retry pauses: "full jitter" exponential back-off, strictly inside its bound.

The pause before retry n (n = 0 for the first retry) is uniform in [0, min(cap, base * 2**n)]:
never above `cap`, and the first retries after a fault are quick (the first at most `base`).
Many clients failing together spread out instead of retrying in step.
"""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry `attempt` (0-based): uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(max(0.0, cap), max(0.0, base) * 2 ** min(max(0, attempt), 62))
    return (rng or random).uniform(0.0, ceiling)  # noqa: S311  (jitter, not cryptography)
