"""PostgreSQL/TimescaleDB tuning computed from a host's RAM and vCPUs.

Pure Python with no Ansible imports at module level, so the role (through the
``timescaledb_tune`` filter) and the unit tests (tests/timescaledb/test_tuning.py) call the
very same code. Formulas follow timescaledb-tune's published ones:

- shared_buffers = RAM/4, effective_cache_size = 3/4 RAM
- maintenance_work_mem = 128 MB per GB of RAM, capped at 2 GB
- work_mem = RAM-in-GB x 128 MB / max_connections / max(round(cpus/2), 1), never below
  64 kB (timescaledb-tune issue #38 produced values PostgreSQL rejects)
- max_worker_processes = 3 + timescaledb.max_background_workers + cpus
- max_parallel_workers = cpus, max_parallel_workers_per_gather = round(cpus/2)
- max_locks_per_transaction and max_connections by RAM band
- min/max_wal_size: 512MB/1GB, or 1/4 and 3/5 of the WAL disk when its size is known
"""

from __future__ import annotations

from typing import Any

KB = 1
MB = 1024 * KB
GB = 1024 * MB

# PostgreSQL's lower bound for work_mem is 64 kB.
WORK_MEM_MIN_KB = 64
MAINTENANCE_WORK_MEM_CAP_KB = 2 * GB
DEFAULT_MIN_WAL_KB = 512 * MB
DEFAULT_MAX_WAL_KB = 1 * GB


def round_half_up(value: float) -> int:
    """Round like Go's math.Round (what timescaledb-tune uses), not Python's banker's round."""
    return int(value + 0.5)


def format_kb(kb: int) -> str:
    """A PostgreSQL memory value: the largest unit (GB, MB, kB) that keeps it an integer."""
    for unit, size in (("GB", GB), ("MB", MB)):
        if kb >= size and kb % size == 0:
            return f"{kb // size}{unit}"
    return f"{kb}kB"


def whole_mb(kb: int) -> int:
    """Round a kB amount down to whole megabytes (kept as is below 1 MB)."""
    return kb // MB * MB if kb >= MB else kb


def default_max_connections(memory_mb: int) -> int:
    """max_connections by RAM band: <=2 GB 25, <=4 GB 50, <=6 GB 75, else 100."""
    for limit_gb, conns in ((2, 25), (4, 50), (6, 75)):
        if memory_mb <= limit_gb * 1024:
            return conns
    return 100


def max_locks_per_transaction(memory_mb: int) -> int:
    """<8 GB 128, <16 GB 256, <32 GB 512, else 1024."""
    for limit_gb, locks in ((8, 128), (16, 256), (32, 512)):
        if memory_mb < limit_gb * 1024:
            return locks
    return 1024


def tune(
    memory_mb: int,
    cpus: int,
    max_connections: int | None = None,
    wal_disk_gb: float | None = None,
    max_background_workers: int = 16,
) -> dict[str, str]:
    """Return setting name -> value (strings, ready for postgresql.conf)."""
    if memory_mb <= 0 or cpus <= 0:
        raise ValueError(f"memory_mb and cpus must be positive (got {memory_mb}, {cpus})")
    conns = max_connections or default_max_connections(memory_mb)
    if conns <= 0:
        raise ValueError(f"max_connections must be positive (got {conns})")
    mem_kb = memory_mb * MB
    mem_gb = memory_mb / 1024
    half_cpus = round_half_up(cpus / 2)

    work_mem_kb = int(mem_gb * 128 * MB / conns / max(half_cpus, 1))
    settings: dict[str, Any] = {
        "max_connections": conns,
        "shared_buffers": format_kb(whole_mb(mem_kb // 4)),
        "effective_cache_size": format_kb(whole_mb(mem_kb * 3 // 4)),
        "maintenance_work_mem": format_kb(min(int(mem_gb * 128 * MB), MAINTENANCE_WORK_MEM_CAP_KB)),
        "work_mem": format_kb(max(work_mem_kb, WORK_MEM_MIN_KB)),
        "timescaledb.max_background_workers": max_background_workers,
        "max_worker_processes": 3 + max_background_workers + cpus,
        "max_parallel_workers": cpus,
        "max_parallel_workers_per_gather": half_cpus,
        "wal_buffers": "16MB",
        "min_wal_size": format_kb(DEFAULT_MIN_WAL_KB),
        "max_wal_size": format_kb(DEFAULT_MAX_WAL_KB),
        "random_page_cost": "1.1",
        "effective_io_concurrency": 256,
        "checkpoint_completion_target": "0.9",
        "max_locks_per_transaction": max_locks_per_transaction(memory_mb),
        "default_statistics_target": 100,
    }
    if wal_disk_gb:
        wal_kb = int(wal_disk_gb * GB)
        settings["max_wal_size"] = format_kb(max(whole_mb(wal_kb * 3 // 5), DEFAULT_MAX_WAL_KB))
        settings["min_wal_size"] = format_kb(max(whole_mb(wal_kb // 4), DEFAULT_MIN_WAL_KB))
    return {k: str(v) for k, v in settings.items()}


def timescaledb_tune(
    facts: dict[str, Any],
    memory_mb: int | None = None,
    cpus: int | None = None,
    max_connections: int | None = None,
    wal_disk_gb: float | None = None,
    max_background_workers: int = 16,
    overrides: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Ansible filter: ``ansible_facts | timescaledb_tune(...)``; explicit inputs win over facts."""
    mem = int(memory_mb or facts.get("memtotal_mb") or 0)
    ncpu = int(cpus or facts.get("processor_vcpus") or facts.get("processor_nproc") or 0)
    result = tune(mem, ncpu, max_connections, wal_disk_gb, max_background_workers)
    result.update({k: str(v) for k, v in (overrides or {}).items()})
    return result


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, Any]:
        return {"timescaledb_tune": timescaledb_tune}
