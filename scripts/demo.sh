#!/usr/bin/env bash
# The whole GePT host on this machine, offline: a Debian systemd container (inventories/demo)
# provisioned by `ansible-playbook site.yml`, its collectors reading a bundled stand-in of the
# OSRS API served inside the host. Published on this machine's 127.0.0.1 only.
#   scripts/demo.sh up     boot (or re-converge) the demo host and wait for fresh data
#   scripts/demo.sh down   remove the demo host (only the container named below)
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=gept-demo
HTTPS_PORT="${GEPT_DEMO_HTTPS_PORT:-8443}"
WAIT_SECONDS="${GEPT_DEMO_WAIT_SECONDS:-420}"
VAULT_PASS=.secrets/demo-vault-pass
log() { printf '[demo] %s\n' "$*"; }

down() {
  if docker inspect "$NAME" >/dev/null 2>&1; then
    docker rm -f "$NAME" >/dev/null
    log "removed container $NAME"
  else
    log "no container $NAME"
  fi
}

boot() {
  if [[ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" == "true" ]]; then
    log "container $NAME already running"
    return
  fi
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  log "booting $NAME (systemd as PID 1), HTTPS published on 127.0.0.1:$HTTPS_PORT"
  docker run -d --name "$NAME" --hostname "$NAME" \
    --cap-add SYS_ADMIN --cap-add NET_ADMIN \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
    -p "127.0.0.1:${HTTPS_PORT}:443" \
    gept-base:latest /sbin/init >/dev/null
  for _ in $(seq 1 60); do
    state=$(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true)
    [[ "$state" == "running" || "$state" == "degraded" ]] && { log "systemd: $state"; return; }
    sleep 1
  done
  log "systemd in $NAME did not come up within 60 s"; exit 1
}

wait_fresh() {
  log "waiting (at most ${WAIT_SECONDS}s) for fresh 1-minute and 5-minute rows on the dashboard"
  local deadline=$(( $(date +%s) + WAIT_SECONDS ))
  while (( $(date +%s) < deadline )); do
    if docker exec "$NAME" python3 - <<'PY' 2>/dev/null
import json, sys, urllib.request
status = json.load(urllib.request.urlopen("http://127.0.0.1:8080/api/status", timeout=5))
tables = {t["table"]: t for t in status.get("tables", [])}
fresh = all(tables.get(n, {}).get("rows", 0) > 0 and tables[n].get("colour") == "green"
            for n in ("prices_latest_1m", "price_data_5min"))
sys.exit(0 if fresh else 1)
PY
    then
      log "dashboard shows fresh prices_latest_1m and price_data_5min rows"
      return 0
    fi
    sleep 10
  done
  log "no fresh rows within ${WAIT_SECONDS}s: see 'docker exec $NAME journalctl -u gept-collector-fivemin'"
  return 1
}

up() {
  scripts/ensure-docker.sh
  scripts/build-base-image.sh
  scripts/demo-vault.sh
  boot
  log "ansible-playbook -i inventories/demo site.yml"
  ANSIBLE_CONFIG="$PWD/ansible.cfg" .venv/bin/ansible-playbook -i inventories/demo site.yml \
    --vault-password-file "$VAULT_PASS"
  wait_fresh
  cat <<MSG

GePT demo host is up (container $NAME). On this machine only:
  Status dashboard  https://127.0.0.1:${HTTPS_PORT}/
  Grafana           https://127.0.0.1:${HTTPS_PORT}/grafana/   (not installed in the demo: no Grafana repo here)
  Prometheus        https://127.0.0.1:${HTTPS_PORT}/prometheus/
  Alertmanager      https://127.0.0.1:${HTTPS_PORT}/alertmanager/
The certificate is self-signed (curl -k). Log in as "gept"; the password is in the demo vault:
  .venv/bin/ansible-vault view --vault-password-file $VAULT_PASS inventories/demo/group_vars/all/vault.yml
Inside the host:  docker exec -it $NAME bash   (systemctl list-units 'gept-*')
Remove it all:    make demo-down
MSG
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
