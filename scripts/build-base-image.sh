#!/usr/bin/env bash
# Build (once) the Debian systemd base image the Molecule scenarios and the demo boot.
# The image tag carries a hash of this recipe, so a changed recipe builds a new image and an
# unchanged one is reused. Usage: [GEPT_BASE_SUITE=bookworm] scripts/build-base-image.sh [--print-tag]
# Each suite is also tagged gept-base:SUITE (the bookworm scenario boots gept-base:bookworm);
# trixie, the default, is gept-base:latest too.
set -euo pipefail

SUITE="${GEPT_BASE_SUITE:-trixie}"
MIRROR="${GEPT_BASE_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,sudo,ca-certificates,procps,iproute2,cron"
recipe_hash=$(printf '%s\n' "$SUITE" "$PACKAGES" "$(sed -n '/^# recipe-start/,/^# recipe-end/p' "$0")" \
  | sha256sum | cut -c1-12)
IMAGE="gept-base:${SUITE}-${recipe_hash}"

if [[ "${1:-}" == "--print-tag" ]]; then
  echo "$IMAGE"
  exit 0
fi

log() { printf '[base-image] %s\n' "$*"; }

tag_aliases() {
  docker tag "$IMAGE" "gept-base:${SUITE}"
  if [[ "$SUITE" == trixie ]]; then docker tag "$IMAGE" "gept-base:latest"; fi
}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "cached: $IMAGE"
  tag_aliases
  exit 0
fi

command -v debootstrap >/dev/null 2>&1 || {
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

rootfs=$(mktemp -d /var/tmp/gept-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

# recipe-start
log "debootstrap $SUITE into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >/dev/null
# A fixed machine-id keeps systemd-firstboot quiet; each container still gets its own hostname.
rm -f "$rootfs/etc/machine-id"
systemd-machine-id-setup --root="$rootfs" >/dev/null 2>&1 || \
  tr -dc 'a-f0-9' </dev/urandom | head -c 32 >"$rootfs/etc/machine-id"
ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-firstboot.service"
# Units that cannot work in a container: keep `systemctl is-system-running` honest.
for unit in systemd-remount-fs.service getty@tty1.service console-getty.service \
            systemd-udev-trigger.service systemd-udevd.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
rm -rf "$rootfs"/var/cache/apt/archives/*.deb
# recipe-end

log "importing as $IMAGE"
tar -C "$rootfs" -c . | docker import --change 'CMD ["/sbin/init"]' - "$IMAGE" >/dev/null
tag_aliases
log "built $IMAGE"
