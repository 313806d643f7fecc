#!/usr/bin/env python3
"""gept-collector-fivemin: every /5m window -> price_data_5min, with zero gaps.

Each cycle stores the newest window and back-fills every window missing from the
collection_windows ledger inside the look-back (gept_collectors.windows explains the rules).
Runs 30 s after each 5-minute boundary by default, when the API has published the window.
"""

import sys

from gept_collectors.runner import main
from gept_collectors.windows import WindowCollector


class FiveMinCollector(WindowCollector):
    name = "fivemin"
    series = "5m"
    table = "price_data_5min"
    default_window = 300
    default_lookback = 86400.0  # GEPT_FIVEMIN_LOOKBACK_SECONDS; the API keeps 5m history to 2021
    default_interval = 300.0
    default_offset = 30.0


if __name__ == "__main__":
    sys.exit(main(FiveMinCollector))
