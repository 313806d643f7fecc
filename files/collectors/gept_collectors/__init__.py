"""gept_collectors: the shared library of the GePT data collectors and status dashboard.

Config from the environment (config), HTTP with a descriptive User-Agent and back-off (http),
PostgreSQL through PgBouncer with reconnects and batched writes (db), Prometheus metrics
(metrics), graceful shutdown (shutdown), response validation (validate), the collector loop
(runner) and gap-free window collection shared by the 5-minute and hourly collectors (windows).
"""

__version__ = "1.0.0"
