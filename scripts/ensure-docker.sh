#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, installing and starting one if needed.
# Idempotent: a running engine is left alone. Never touches containers it did not start.
set -euo pipefail

log() { printf '[ensure-docker] %s\n' "$*"; }

if docker info >/dev/null 2>&1; then
  log "engine already running"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

log "starting dockerd (log: /var/log/gept-dockerd.log)"
nohup dockerd >/var/log/gept-dockerd.log 2>&1 &

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "engine ready ($(docker info --format '{{.ServerVersion}} {{.Driver}}'))"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within 60 s; last lines of its log:"
tail -n 30 /var/log/gept-dockerd.log >&2 || true
exit 1
