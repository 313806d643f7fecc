"""The test toolkit shared by every test area and the benchmarks: free loopback ports and
polling (net), a throwaway PostgreSQL cluster (pg), a throwaway PostgreSQL 17 + TimescaleDB
full-edition server in a container (timescaledb), the roles' own defaults read as data
(roles), a repository script imported by its path (modules). pytest puts tests/ on the import
path (pyproject's `pythonpath`); a benchmark run as a script adds it itself. Import the modules
by name: `from support.pg import PgCluster`."""
