#!/usr/bin/env python3
"""Stand-in for the seed's redundant legacy collector (osrs_collector_pg.py): a long-running
loop that writes a heartbeat line every few seconds. --ignore-sigterm models the copy that
did not stop on SIGTERM (the seed slept 300 s at a time and was SIGKILLed). Bounded: exits
by itself after --max-runtime seconds."""

import argparse
import signal
import time
from datetime import UTC, datetime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--max-runtime", type=float, default=4 * 3600)
    parser.add_argument("--log", default="/var/log/osrs-collector-pg.log")
    args = parser.parse_args()
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deadline = time.monotonic() + args.max_runtime
    while time.monotonic() < deadline:
        with open(args.log, "a", encoding="utf-8") as log:
            log.write(f"{datetime.now(UTC).isoformat()} legacy collector cycle\n")
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
