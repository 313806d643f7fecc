#!/usr/bin/env bash
# Install everything the controller needs to lint, test and run the demo, on a fresh
# Debian machine: apt packages, the Docker engine, the Python venv, the base image, the
# TimescaleDB package and its stand-in apt repository, and the demo vault.
# Idempotent; each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup] %s\n' "$*"; }
export DEBIAN_FRONTEND=noninteractive

# --- apt packages used on the controller by tests ---------------------------------------
# Each area lists its own; keep one package per line in its block.
APT_PACKAGES=(
  # foundation: harness
  docker.io debootstrap git make
  # database and collectors: a real PostgreSQL for integration tests
  postgresql postgresql-client
  # monitoring: promtool / amtool for rule and config tests
  prometheus prometheus-alertmanager
  # collectors: headless browser for the dashboard screenshot test
  chromium
  # collectors: PgBouncer for the benchmark's "inserts through the pooler" figure
  pgbouncer
  # database: the signed stand-in of Timescale's apt repository (index, signature)
  apt-utils gpg
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packaged daemons are not wanted running on the controller; tests start their own.
for unit in prometheus prometheus-alertmanager prometheus-node-exporter postgresql pgbouncer; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
    systemctl stop "$unit" || true
  fi
done

# --- Python venv ---------------------------------------------------------------------
if [[ ! -x .venv/bin/ansible-playbook ]] || ! cmp -s requirements.txt .venv/.requirements.txt; then
  log "python venv (.venv) from requirements.txt"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  cp requirements.txt .venv/.requirements.txt
fi

# --- Docker engine and the systemd base image ----------------------------------------
scripts/ensure-docker.sh
scripts/timed.sh "base image trixie" scripts/build-base-image.sh
# Debian 12: the bookworm scenario's host, and the build image of its TimescaleDB.
scripts/timed.sh "base image bookworm" env GEPT_BASE_SUITE=bookworm scripts/build-base-image.sh

# --- TimescaleDB full edition for the test/demo hosts ------------------------------------
# Built once per source/patch/PostgreSQL minor (cached in .cache/timescaledb), then served,
# signed, as a stand-in for Timescale's apt repository on the Docker bridge address.
scripts/timed.sh "build timescaledb-2.29.2 pg17" scripts/build-timescaledb.sh 2.29.2 17 trixie
scripts/timed.sh "build timescaledb-2.28.3 pg15" scripts/build-timescaledb.sh 2.28.3 15 bookworm
# The same release for 17: pg_upgradecluster needs the old cluster's TimescaleDB version built
# for the new major too (playbooks/upgrade_postgresql.yml, proved in the live scenario).
scripts/timed.sh "build timescaledb-2.28.3 pg17" scripts/build-timescaledb.sh 2.28.3 17 trixie
scripts/timescaledb-apt-repo.sh

# --- Demo/test vault (random secrets, encrypted, git-ignored) ----------------------------
scripts/demo-vault.sh
log "controller ready"
