#!/usr/bin/env bash
# Compression and aggregate figures of the GePT schema on real PostgreSQL 17 + TimescaleDB
# (full edition, the package scripts/build-timescaledb.sh built): starts a throwaway trixie
# container, installs postgresql-17 from Debian and the built timescaledb-2-postgresql-17
# .deb, runs benchmarks/timescaledb/compression_benchmark.py from the controller against it,
# prints its tables and removes the container (also on failure or Ctrl-C).
#
#   scripts/bench-timescaledb.sh [benchmark arguments, e.g. --variants 0 --no-ohlc]
#
# Environment: GEPT_BENCH_CONTAINER (container name, default gept-bench-timescaledb),
# GEPT_BENCH_TSDB (TimescaleDB version of the cached build, default 2.29.2).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[bench] %s\n' "$*" >&2; }

NAME=${GEPT_BENCH_CONTAINER:-gept-bench-timescaledb}
VERSION=${GEPT_BENCH_TSDB:-2.29.2}
IMAGE=gept-base:trixie
shopt -s nullglob
debs=(.cache/timescaledb/"$VERSION"-pg17-trixie-*/timescaledb-2-postgresql-17_*.deb)
if ((${#debs[@]} != 1)); then
  log "expected one built timescaledb-2-postgresql-17 $VERSION package in .cache/timescaledb, found ${#debs[@]}:"
  log "build it with scripts/build-timescaledb.sh $VERSION 17 trixie (scripts/setup-controller.sh does)"
  exit 1
fi
deb_dir=$(cd "$(dirname "${debs[0]}")" && pwd -P)
deb_file=$(basename "${debs[0]}")
docker image inspect "$IMAGE" >/dev/null || { log "no $IMAGE image: scripts/build-base-image.sh"; exit 1; }

if docker container inspect "$NAME" >/dev/null 2>&1; then
  log "a container named $NAME exists (an earlier run?); remove it with: docker rm -f $NAME"
  exit 1
fi
trap 'docker rm -f "$NAME" >/dev/null 2>&1 || true' EXIT INT TERM

log "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$SECONDS
# No systemd needed: the container only runs the PostgreSQL server (pg_ctlcluster).
docker run -d --name "$NAME" --tmpfs /tmp -v "$deb_dir:/srv/timescaledb:ro" "$IMAGE" sleep infinity >/dev/null
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
docker exec -i -e PGPASS="$password" -e DEB="/srv/timescaledb/$deb_file" "$NAME" bash -euo pipefail -s <<'EOF'
export DEBIAN_FRONTEND=noninteractive
# Never start services from maintainer scripts (no init here; the cluster is started below).
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql-17 "$DEB" >/dev/null
[ -d /etc/postgresql/17/main ] || pg_createcluster 17 main >/dev/null
cat > /etc/postgresql/17/main/conf.d/90-bench.conf <<'CONF'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
listen_addresses = '*'
# A throwaway server: durability off (sizes and query times do not depend on it).
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = '2GB'
work_mem = '64MB'
maintenance_work_mem = '1GB'
max_wal_size = '8GB'
# The policies' background jobs are not wanted while measuring.
timescaledb.max_background_workers = 0
CONF
echo "host all all 0.0.0.0/0 scram-sha-256" >> /etc/postgresql/17/main/pg_hba.conf
pg_ctlcluster 17 main start
runuser -u postgres -- psql -X -q -c "ALTER ROLE postgres PASSWORD '$PGPASS'"
runuser -u postgres -- psql -X -q -c "CREATE EXTENSION timescaledb" 2>/dev/null
EOF
ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$NAME")
versions=$(docker exec "$NAME" runuser -u postgres -- psql -X -At -c \
  "SELECT split_part(version(), ' ', 2) || ' / TimescaleDB ' || extversion || ' (' || current_setting('timescaledb.license') || ')' FROM pg_extension WHERE extname = 'timescaledb'")
log "PostgreSQL $versions in $NAME ($ip), ready after $((SECONDS - start)) s"

.venv/bin/python benchmarks/timescaledb/compression_benchmark.py \
  --dsn "host=$ip port=5432 dbname=postgres user=postgres password=$password sslmode=disable connect_timeout=10" \
  "$@"
log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); total $((SECONDS - start)) s"
