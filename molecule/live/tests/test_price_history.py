"""The price history move on the live server (molecule scenario `live`, after converge.yml's
playbooks/adopt_price_history.yml): price_data_5min, the seed's keyless table with duplicates,
is a keyed, compressed hypertable; the move's ledger (public.gept_history_state/_intervals)
holds what it counted and the disk it used; the move was killed with SIGKILL part-way (converge.yml
records the ledger at the kill in /srv/live-test/history-killed.json) and the playbook resumed it.
The other checks of the same data (every original
row with equal values, no 5-minute window missing, ML tables unchanged, the inference stand-in
without an error or a stale read across the whole run, the move included) are test_live.py's."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

from live_support import BEFORE, STATE, psql

_spec = importlib.util.spec_from_file_location(
    "gept_status", Path(__file__).resolve().parents[3] / "roles/status/files/gept-status.py"
)
STATUS = importlib.util.module_from_spec(_spec)
sys.modules["gept_status"] = STATUS
_spec.loader.exec_module(STATUS)


def state(host) -> dict:
    return json.loads(
        psql(host, "SELECT row_to_json(s) FROM gept_history_state s WHERE table_name = 'price_data_5min'")
    )


def test_a_compressed_hypertable_with_its_primary_key(host):
    out = psql(
        host,
        """SELECT (SELECT compression_enabled FROM timescaledb_information.hypertables
                    WHERE hypertable_schema = 'public' AND hypertable_name = 'price_data_5min'),
                  (SELECT pg_get_constraintdef(oid) FROM pg_constraint
                    WHERE conrelid = 'price_data_5min'::regclass AND contype = 'p'),
                  (SELECT count(*) FILTER (WHERE is_compressed) || '/' || count(*)
                     FROM timescaledb_information.chunks
                    WHERE hypertable_name = 'price_data_5min'),
                  (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'price_data_5min'::regclass)""",
    )
    compression, key, chunks, owner = out.split("|")
    print(f"compression {compression}, {key}, compressed chunks {chunks}, owner {owner}")
    assert compression == "t"
    assert key == 'PRIMARY KEY (item_id, "timestamp")'
    assert int(chunks.split("/")[0]) > 0
    assert owner == "osrs_user"  # the table's owner before the move (the seed's)
    assert (
        psql(
            host,
            "SELECT to_regclass('price_data_5min_old') IS NULL AND to_regclass('price_data_5min_new') IS "
            "NULL",
        )
        == "t"
    )
    # The ML login reads it with its own settings.
    assert psql(host, "SELECT has_table_privilege('osrs_user', 'price_data_5min', 'SELECT')") == "t"


def test_duplicates_counted_and_one_row_per_key_left(host):
    before = json.loads(host.file(f"{BEFORE}/checksums.json").content_string)["price_data_5min"]
    counted = int(
        psql(
            host,
            "SELECT sum(duplicate_rows) FROM gept_history_intervals WHERE table_name = 'price_data_5min'",
        )
    )
    print(
        f"before: {before['rows']} rows, {before['distinct_rows']} distinct; the move counted {counted} "
        "duplicates"
    )
    assert counted == before["rows"] - before["distinct_rows"] > 0
    moved = json.loads(
        psql(
            host,
            """SELECT json_build_object('intervals', count(*), 'moved', sum(moved_rows),
                                       'old', sum(old_rows), 'verified', count(verified_at))
                                     FROM gept_history_intervals WHERE table_name = 'price_data_5min'""",
        )
    )
    print(f"ledger: {moved}")
    assert moved["verified"] == moved["intervals"] > 0
    assert moved["old"] - moved["moved"] == counted


def test_the_disk_never_passed_the_threshold(host):
    s = state(host)
    total = s["disk_total_bytes"]
    peak, before, after = s["disk_used_peak"], s["disk_used_before"], s["disk_used_after"]
    table_before, table_after = s["table_bytes_before"], s["table_bytes_after"]
    print(
        f"data filesystem {total / 1e9:.2f} GB: before {100 * before / total:.1f}%, peak "
        f"{100 * peak / total:.1f}%, "
        f"after {100 * after / total:.1f}% (threshold {s['threshold_percent']}%); table "
        f"{table_before / 1e6:.0f} MB "
        f"-> {table_after / 1e6:.0f} MB compressed; the move's extra at its peak "
        f"{(peak - before) / 1e6:.0f} MB, "
        f"an in-place migrate_data's at least {table_before / 1e6:.0f} MB (a second copy of the table)"
    )
    assert peak <= total * float(s["threshold_percent"]) / 100
    # The keyed table at its largest (one interval uncompressed plus the compressed ones) stayed
    # under the original's size: what an in-place migrate_data needs a second time.
    print(f"keyed table at its largest during the move: {s['new_bytes_peak'] / 1e6:.0f} MB")
    assert 0 < s["new_bytes_peak"] < table_before
    assert table_after < table_before
    assert s["phase"] == "done"


def test_progress_in_the_journal_and_the_metrics(host, tmp_path):
    journal = host.run("journalctl -u gept-price-history.service --no-pager --output=cat").stdout
    assert "rows/s" in journal and "ETA" in journal and "intervals" in journal, journal[-2000:]
    prom = host.file("/var/lib/prometheus/node-exporter/gept_price_history.prom").content_string
    assert 'gept_history_done{table="price_data_5min"} 1' in prom
    # What gept-status (playbooks/status.yml) shows from that file.
    (tmp_path / "gept_price_history.prom").write_text(prom)
    (check,) = STATUS.check_history(str(tmp_path))
    print(check)
    assert check.level == STATUS.OK and "keyed hypertable" in check.detail


def test_the_role_treats_it_as_a_normal_hypertable(host):
    out = psql(
        host,
        """SELECT (SELECT count(*) FROM timescaledb_information.jobs
                    WHERE proc_name = 'policy_compression' AND hypertable_name = 'price_data_5min'),
                  (SELECT count(*) FROM timescaledb_information.continuous_aggregates
                    WHERE hypertable_name = 'price_data_5min'),
                  (SELECT count(*) FROM price_data_hourly
                    WHERE bucket < (SELECT min("timestamp") FROM price_data_5min)
                      + interval '2 days')""",
    )
    policy, aggregates, early_buckets = (int(x) for x in out.split("|"))
    assert policy == 1 and aggregates == 2
    assert early_buckets > 0, "the hourly rollup does not cover the moved history"


def test_a_rerun_changes_nothing(host):
    out = host.run(
        "runuser -u postgres -- python3 /usr/local/lib/gept-timescaledb/gept_history.py move --dbname "
        "osrs_data"
    )
    assert out.rc == 0, out.stdout + out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["changed"] is False


def test_killed_mid_move_and_resumed_each_interval_verified_once(host):
    killed = json.loads(host.file(f"{STATE}/history-killed.json").content_string)
    at = killed["status_at_kill"]
    print(
        f"at the kill: unit {killed['unit_before_kill']} -> {killed['unit_after_kill']}, "
        f"phase {at['phase']}, "
        f"intervals verified {at['intervals_done']}/{at['intervals']}, {at['moved_rows']} rows moved"
    )
    assert not killed["finished_before_kill"], f"the move had finished before the kill: {killed}"
    assert killed["killed"] and killed["unit_before_kill"] == "active", killed
    assert at["phase"] == "moving" and 0 < at["intervals_done"] < at["intervals"], killed
    # The unit really died of the signal, and the playbook started it a second time.
    journal = host.run("journalctl -u gept-price-history.service --no-pager --output=cat").stdout
    assert "status=9/KILL" in journal, journal[-3000:]
    assert len(re.findall(r"Started gept-price-history\.service", journal)) == 2, journal[-3000:]
    # After the resume every interval is verified, those verified before the kill not again
    # (their verification time unchanged), the others after it; each progress line once.
    now = json.loads(
        psql(
            host,
            """SELECT json_agg(json_build_object('range_start', extract(epoch FROM range_start)::text,
                                                 'verified_at', extract(epoch FROM verified_at)::text)
                               ORDER BY range_start)
                 FROM gept_history_intervals WHERE table_name = 'price_data_5min'""",
        )
    )
    before = {i["range_start"]: i["verified_at"] for i in killed["ledger_at_kill"]["intervals"]}
    assert [i["range_start"] for i in now] == list(before) and len(now) == at["intervals"]
    assert sum(v is not None for v in before.values()) == at["intervals_done"]
    for i in now:
        was = before[i["range_start"]]
        assert i["verified_at"] is not None, i
        if was is not None:
            assert i["verified_at"] == was, f"verified again after the kill: {i}"
        else:
            assert float(i["verified_at"]) > float(killed["ledger_at_kill"]["at"]), i
    label = r"interval \d+/\d+ [^:]+:\d\d\.\.[^:]+:\d\d"
    moved = re.findall(rf"^gept-history: ({label}): \d+ rows ", journal, re.M)
    print(f"progress lines: {moved}")
    assert len(moved) == len(set(moved)), moved
    # The totals after the resume: every row of the original counted, moved or counted a duplicate.
    out = host.run(
        "runuser -u postgres -- python3 /usr/local/lib/gept-timescaledb/gept_history.py status "
        "--dbname osrs_data"
    )
    done = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"after the resume: {done['intervals_done']}/{done['intervals']} intervals, {done['old_rows']} rows, "
        f"{done['duplicate_rows']} duplicates, {done['moved_rows']} moved"
    )
    assert done["phase"] == "done" and done["intervals_done"] == done["intervals"] == at["intervals"]
    assert done["old_rows"] == done["moved_rows"] + done["duplicate_rows"] > at["old_rows"] > 0
