"""Unit tests of the tuning the timescaledb role writes (roles/timescaledb/filter_plugins/
timescaledb_tune.py, the module behind the role's `timescaledb_tune` filter)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "roles" / "timescaledb" / "filter_plugins"))
import timescaledb_tune as tt  # noqa: E402

# (RAM MB, vCPUs) -> expected values. 24 GB / 4 CPU is the Ampere A1 free shape.
SHAPES = {
    (1024, 1): {
        "max_connections": "25",
        "shared_buffers": "256MB",
        "effective_cache_size": "768MB",
        "maintenance_work_mem": "128MB",
        "work_mem": "5242kB",
        "max_worker_processes": "20",
        "max_parallel_workers": "1",
        "max_parallel_workers_per_gather": "1",
        "max_locks_per_transaction": "128",
    },
    (4096, 2): {
        "max_connections": "50",
        "shared_buffers": "1GB",
        "effective_cache_size": "3GB",
        "maintenance_work_mem": "512MB",
        "work_mem": "10485kB",
        "max_worker_processes": "21",
        "max_parallel_workers": "2",
        "max_parallel_workers_per_gather": "1",
        "max_locks_per_transaction": "128",
    },
    (24576, 4): {
        "max_connections": "100",
        "shared_buffers": "6GB",
        "effective_cache_size": "18GB",
        "maintenance_work_mem": "2GB",
        "work_mem": "15728kB",
        "max_worker_processes": "23",
        "max_parallel_workers": "4",
        "max_parallel_workers_per_gather": "2",
        "max_locks_per_transaction": "512",
    },
    (131072, 32): {
        "max_connections": "100",
        "shared_buffers": "32GB",
        "effective_cache_size": "96GB",
        "maintenance_work_mem": "2GB",
        "work_mem": "10485kB",
        "max_worker_processes": "51",
        "max_parallel_workers": "32",
        "max_parallel_workers_per_gather": "16",
        "max_locks_per_transaction": "1024",
    },
}
FIXED = {
    "timescaledb.max_background_workers": "16",
    "wal_buffers": "16MB",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "256",
    "checkpoint_completion_target": "0.9",
    "min_wal_size": "512MB",
    "max_wal_size": "1GB",
}


@pytest.mark.parametrize(("shape", "expected"), SHAPES.items(), ids=[f"{m}MB-{c}cpu" for m, c in SHAPES])
def test_shapes(shape, expected):
    result = tt.tune(*shape)
    assert {k: result[k] for k in expected} == expected
    assert {k: result[k] for k in FIXED} == FIXED


@pytest.mark.parametrize(
    ("memory_mb", "conns"),
    [(512, 25), (2048, 25), (2049, 50), (4096, 50), (6144, 75), (6145, 100), (65536, 100)],
)
def test_max_connections_band(memory_mb, conns):
    assert tt.tune(memory_mb, 2)["max_connections"] == str(conns)


@pytest.mark.parametrize(
    ("memory_mb", "locks"),
    [(8191, 128), (8192, 256), (16383, 256), (16384, 512), (32767, 512), (32768, 1024)],
)
def test_max_locks_band(memory_mb, locks):
    assert tt.tune(memory_mb, 2)["max_locks_per_transaction"] == str(locks)


def test_work_mem_never_below_64kb():
    # timescaledb-tune issue #38: many connections on a small host gave values PostgreSQL rejects.
    assert tt.tune(512, 64, max_connections=5000)["work_mem"] == "64kB"


def test_explicit_max_connections_is_used():
    result = tt.tune(24576, 4, max_connections=200)
    assert result["max_connections"] == "200"
    assert result["work_mem"] == "7864kB"  # 24 x 128 MB / 200 / 2


def test_half_cpus_round_half_up_like_go():
    assert tt.tune(8192, 3)["max_parallel_workers_per_gather"] == "2"
    assert tt.tune(8192, 5)["max_parallel_workers_per_gather"] == "3"


def test_wal_sizes_follow_the_wal_disk():
    result = tt.tune(24576, 4, wal_disk_gb=100)
    assert result["max_wal_size"] == "60GB"  # 60 % of the disk
    assert result["min_wal_size"] == "25GB"  # 25 % of the disk
    small = tt.tune(24576, 4, wal_disk_gb=1)
    assert (small["min_wal_size"], small["max_wal_size"]) == ("512MB", "1GB")


def test_every_memory_value_is_a_postgresql_unit():
    for shape in SHAPES:
        for name in ("shared_buffers", "effective_cache_size", "maintenance_work_mem", "work_mem"):
            value = tt.tune(*shape)[name]
            assert value[:-2].isdigit() and value[-2:] in ("kB", "MB", "GB"), (name, value)


def test_filter_reads_facts_and_overrides_win():
    facts = {"memtotal_mb": 24576, "processor_vcpus": 4}
    result = tt.FilterModule().filters()["timescaledb_tune"](facts, overrides={"work_mem": "32MB"})
    assert result["shared_buffers"] == "6GB"
    assert result["work_mem"] == "32MB"
    assert tt.timescaledb_tune(facts, memory_mb=1024, cpus=1)["shared_buffers"] == "256MB"


@pytest.mark.parametrize(("memory_mb", "cpus"), [(0, 1), (1024, 0)])
def test_rejects_empty_facts(memory_mb, cpus):
    with pytest.raises(ValueError):
        tt.tune(memory_mb, cpus)
