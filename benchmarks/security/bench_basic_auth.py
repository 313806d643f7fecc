"""Cost of one basic-auth check in nginx for the hash formats one could store in htpasswd.

nginx verifies the htpasswd hash with crypt(3) on every request that carries credentials (no
cache), and a Grafana page load makes dozens of them. This prints the time of one crypt(3)
call per format on this machine, and the checks per second one core could do, which is why
web_proxy stores SHA-512-crypt at glibc's default 5000 rounds rather than passlib's 656,000.

Usage (repository root): .venv/bin/python benchmarks/security/bench_basic_auth.py
"""

from __future__ import annotations

import ctypes
import ctypes.util
import secrets
import statistics
import time

# crypt(3) from libcrypt (libxcrypt on Debian), the same function nginx calls.
_libcrypt = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
_libcrypt.crypt.restype = ctypes.c_char_p
_libcrypt.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]

SALT = "GePTbenchSalt000"
FORMATS: dict[str, str] = {
    "SHA-512-crypt, 5000 rounds (web_proxy)": f"$6${SALT}$",
    "SHA-512-crypt, 656000 rounds (passlib default)": f"$6$rounds=656000${SALT}$",
    "bcrypt, cost 10 (htpasswd -B default)": "$2b$10$" + "GePTbenchSaltGePTbench",
}


def crypt(password: str, setting: str) -> str:
    result = _libcrypt.crypt(password.encode(), setting.encode())
    if not result or result.startswith(b"*"):
        raise RuntimeError(f"libcrypt does not support {setting[:4]}")
    return result.decode()


def median_seconds(setting: str, runs: int) -> float:
    password = secrets.token_urlsafe(24)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        crypt(password, setting)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    print(f"{'format':50} {'one check':>12} {'checks/s/core':>14}")
    for name, setting in FORMATS.items():
        runs = 5 if "656000" in setting else 50
        seconds = median_seconds(setting, runs)
        print(f"{name:50} {seconds * 1000:10.2f} ms {1 / seconds:14.0f}")


if __name__ == "__main__":
    main()
