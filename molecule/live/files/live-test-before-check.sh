#!/bin/bash
# Proves the live server's before-state inside the test host (prepare.yml's last step): each
# check prints what it saw; the first that fails stops the script with a message.
# Environment: PGHOST/PGPORT/PGDATABASE/PGUSER/PGPASSWORD (osrs_user), LIVE_WINDOW (seconds).
set -euo pipefail
app=/home/ubuntu/osrs_collector
fail() { echo "FAILED: $*" >&2; exit 1; }
q() { psql -X -At -c "$1"; }

clusters=$(pg_lsclusters -h)
echo "clusters: $clusters"
[ "$(echo "$clusters" | wc -l)" = 1 ] || fail "expected one cluster"
read -r ver name port status _ <<<"$clusters"
[ "$ver $name $port $status" = "15 main 5432 online" ] || fail "expected 15/main online on 5432"

license=$(q 'SHOW timescaledb.license')
version=$(q "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
echo "timescaledb: $version, license $license"
[ "$license" = timescale ] || fail "TimescaleDB is not the full edition"
[ "$version" = 2.28.3 ] || fail "TimescaleDB is not 2.28.3"
grep -qx "deb http://.*/debian/ bookworm main" /etc/apt/sources.list.d/timescaledb.list || fail "timescaledb.list"
[ -s /etc/apt/trusted.gpg.d/timescaledb.gpg ] || fail "no key in trusted.gpg.d"

dups=$(q 'SELECT count(*) FROM (SELECT 1 FROM price_data_5min GROUP BY item_id, "timestamp" HAVING count(*) > 1) d')
rows=$(q 'SELECT count(*) FROM price_data_5min')
echo "price_data_5min: $rows rows, $dups keys stored more than once"
[ "$dups" -gt 0 ] || fail "no duplicates"
for t in items prices_1h prices_latest_1m osrs_news player_counts predictions actual_fills calibration_metrics; do
	n=$(q "SELECT count(*) FROM $t")
	owner=$(q "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = '$t'")
	echo "$t: $n rows, owner $owner"
	[ "$n" -gt 0 ] || fail "$t is empty"
	[ "$owner" = osrs_user ] || fail "$t is not osrs_user's"
done

running=$(docker compose -f $app/docker-compose.yml ps --status running --format '{{.Service}}/{{.Name}}' | sort | tr '\n' ' ')
echo "compose (running): $running"
for c in ge-5m-collector/osrs-5m-collector ge-1m-collector/osrs-1m-collector ge-1h-collector/osrs-1h-collector \
	ge-news-collector/osrs-news-collector ge-dashboard/osrs-dashboard; do
	[[ " $running " == *" $c "* ]] || fail "$c is not running"
done
for p in 9100 9101 9102 9103 8080; do
	holder=$(ss -Hltnp "sport = :$p" | grep -o 'docker-proxy' | head -1 || true)
	echo "port $p: ${holder:-free}"
	[ "$holder" = docker-proxy ] || fail "port $p is not held by the compose stack"
done
clients=$(q "SELECT string_agg(DISTINCT application_name || '@' || host(client_addr), ' ') FROM pg_stat_activity
	WHERE usename = 'osrs_user' AND client_addr << '172.16.0.0/12'::inet")
echo "database clients over the bridge: $clients"
[[ "$clients" == *osrs-5m-collector@* ]] || fail "the 5-minute collector is not connected over the bridge"
age=$(q 'SELECT round(extract(epoch FROM now() - max("timestamp"))) FROM price_data_5min')
echo "newest 5-minute window: ${age} s old"
[ "$age" -le $((3 * LIVE_WINDOW)) ] || fail "the 5-minute data is not fresh"

systemctl is-active --quiet osrs-inference.service || fail "inference stand-in not running"
python3 - <<'PY' || fail "inference stand-in"
import json
s = json.load(open("/var/lib/osrs-inference/state.json"))
print(f"inference: {s['reads']} reads, {s['writes']} writes, {s['error_count']} errors, {s['stale_count']} stale,"
      f" worst staleness {s['worst_staleness_seconds']} s")
assert s["reads"] >= 1 and s["writes"] >= 1, "no read and write yet"
assert s["error_count"] == 0, s["errors"]
assert s["stale_count"] == 0, s["stale_reads"]
PY

iptables -C INPUT -j REJECT --reject-with icmp-host-prohibited || fail "Oracle's REJECT is not loaded"
echo "iptables: Oracle's INPUT REJECT loaded"
pgrep -f '^[^ ]*python[0-9.]* ([^ ]+ )*[^ ]*osrs_collector_pg\.py( |$)' >/dev/null || fail "legacy process not running"
crontab -l -u root | grep -q osrs_collector_pg.py || fail "no cron line"
echo "legacy: process running, cron line present"
systemctl is-active --quiet osrs-player-counts.service osrs-items.service || fail "DuckDB writers"
[ "$(stat -c '%a %U' $app/data)" = "750 ubuntu" ] || fail "DuckDB directory mode"
if runuser -u postgres -- test -r $app/data/items.duckdb; then fail "postgres can read the DuckDB files"; fi
echo "duckdb: writers running, $app/data 0750 ubuntu, unreadable to postgres"
