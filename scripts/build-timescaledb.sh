#!/usr/bin/env bash
# Build TimescaleDB with its TSL part (the full edition) from the vendored release source and
# package it the way Timescale's apt repository names it, for the test and demo hosts:
#   scripts/build-timescaledb.sh [VERSION] [PG_MAJOR] [SUITE]      (default 2.29.2 17 trixie)
# -> .cache/timescaledb/<version>-pg<major>-<suite>-<key>/timescaledb-2-postgresql-<major>_<version>~debian<N>_<arch>.deb
#
# The build runs in a throwaway container from gept-base:<SUITE> (scripts/build-base-image.sh;
# the suite's own compiler and glibc, so a bookworm build also loads on trixie) against the exact
# postgresql-server-dev-<major> the test host installs from the same sources now (a
# TimescaleDB built against one minor's headers may not load on another: `undefined symbol`).
# Patches in patches/timescaledb/ are applied in name order. The result is cached by a hash of
# the source tarball, the patches, the PostgreSQL package version and the packaging recipe: a
# second run only asks apt for the current minor and stops. Older builds of the same
# version/major/suite are removed, so the stand-in repository carries one package per name.
# An image of another suite than SUITE (GEPT_BUILD_IMAGE) gets that suite's sources at apt
# priority 100, as Debian's own backports are pinned.
# Environment: GEPT_VENDOR_DIR (default ../shared/vendor), GEPT_BUILD_IMAGE (gept-base:<SUITE>).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[timescaledb-build] %s\n' "$*"; }
die() { printf '[timescaledb-build] ERROR: %s\n' "$*" >&2; exit 1; }

VERSION=${1:-2.29.2}
PG_MAJOR=${2:-17}
SUITE=${3:-trixie}
# The build machines keep the vendored sources in a shared folder beside the checkout; a
# checkout elsewhere falls back to that folder's usual place.
VENDOR_DIR=${GEPT_VENDOR_DIR:-../shared/vendor}
[[ -n "${GEPT_VENDOR_DIR:-}" || -d "$VENDOR_DIR" || ! -d /work/shared/vendor ]] || VENDOR_DIR=/work/shared/vendor
IMAGE=${GEPT_BUILD_IMAGE:-gept-base:$SUITE}
# Bump when the packaging below changes what ends up in the .deb.
RECIPE=1

case "$SUITE" in
  bookworm) DEBIAN_RELEASE=12 ;;
  trixie) DEBIAN_RELEASE=13 ;;
  *) die "unknown Debian suite '$SUITE' (bookworm or trixie)" ;;
esac
[[ "$PG_MAJOR" =~ ^[0-9]+$ ]] || die "PostgreSQL major must be a number, got '$PG_MAJOR'"

TARBALL="$VENDOR_DIR/timescaledb-$VERSION.tar.gz"
[[ -f "$TARBALL" ]] || die "$TARBALL not found (GEPT_VENDOR_DIR names the vendored sources)"
expected=$(awk -v f="timescaledb-$VERSION.tar.gz" '$2 == f {print $1}' "$VENDOR_DIR/SHA256SUMS")
[[ -n "$expected" ]] || die "timescaledb-$VERSION.tar.gz is not listed in $VENDOR_DIR/SHA256SUMS"
actual=$(sha256sum "$TARBALL" | cut -d' ' -f1)
[[ "$actual" == "$expected" ]] || die "$TARBALL: sha256 $actual, SHA256SUMS says $expected"
PATCHES=(patches/timescaledb/*.patch)

# apt sources for a suite other than the image's own, pinned below the image's suite.
APT_PREP=$(
  cat <<EOF
set -e
export DEBIAN_FRONTEND=noninteractive
. /etc/os-release
if [ "\$VERSION_CODENAME" != "$SUITE" ]; then
  cat > /etc/apt/sources.list.d/$SUITE.sources <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  printf 'Package: *\nPin: release n=$SUITE\nPin-Priority: 100\n' > /etc/apt/preferences.d/$SUITE
  printf 'Package: *\nPin: release n=$SUITE-security\nPin-Priority: 100\n' >> /etc/apt/preferences.d/$SUITE
fi
apt-get update -qq
EOF
)

# 1. Which postgresql-server-dev-<major> would a test host get now?
PG_DEB_VERSION=$(docker run --rm --name "gept-tsdb-probe-$$" "$IMAGE" bash -c "$APT_PREP >/dev/null
apt-cache policy postgresql-server-dev-$PG_MAJOR | awk '/Candidate:/ {print \$2}'")
[[ -n "$PG_DEB_VERSION" && "$PG_DEB_VERSION" != "(none)" ]] ||
  die "no postgresql-server-dev-$PG_MAJOR in $SUITE (as seen from $IMAGE)"

KEY=$({
  echo "recipe $RECIPE version $VERSION pg $PG_MAJOR suite $SUITE pgdeb $PG_DEB_VERSION"
  echo "source $actual"
  for p in "${PATCHES[@]}"; do [[ -f "$p" ]] && sha256sum "$p" | cut -d' ' -f1; done
} | sha256sum | cut -c1-16)
PKG=timescaledb-2-postgresql-$PG_MAJOR
PKG_VERSION="$VERSION~debian$DEBIAN_RELEASE"
OUT_BASE=.cache/timescaledb
OUT_DIR="$OUT_BASE/$VERSION-pg$PG_MAJOR-$SUITE-$KEY"
if compgen -G "$OUT_DIR/${PKG}_${PKG_VERSION}_*.deb" >/dev/null; then
  log "cached: $(ls "$OUT_DIR"/*.deb) (built against postgresql-server-dev-$PG_MAJOR $PG_DEB_VERSION)"
  exit 0
fi

# 2. Build in a throwaway container, package with dpkg-deb.
log "building TimescaleDB $VERSION (full edition) for PostgreSQL $PG_DEB_VERSION ($SUITE) in a container from $IMAGE"
start=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gept-tsdb-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/patches" "$WORK/out"
for p in "${PATCHES[@]}"; do [[ -f "$p" ]] && cp "$p" "$WORK/patches/"; done
docker run --rm --name "gept-tsdb-build-$$" \
  -v "$(realpath "$TARBALL"):/src.tar.gz:ro" -v "$WORK/patches:/patches:ro" -v "$WORK/out:/out" \
  -e PG_MAJOR="$PG_MAJOR" -e PG_DEB_VERSION="$PG_DEB_VERSION" -e TS_VERSION="$VERSION" \
  -e PKG="$PKG" -e PKG_VERSION="$PKG_VERSION" -e OUT_UID="$(id -u)" \
  "$IMAGE" bash -c "$APT_PREP"'
set -eu
apt-get install -y -qq --no-install-recommends cmake gcc make patch libssl-dev libicu-dev \
  binutils "postgresql-server-dev-$PG_MAJOR=$PG_DEB_VERSION" >/dev/null
mkdir -p /build && tar -C /build -xzf /src.tar.gz
cd "/build/timescaledb-$TS_VERSION"
for p in /patches/*.patch; do [ -f "$p" ] && { echo "applying $(basename "$p")"; patch -p1 --forward < "$p"; }; done
# Compiler output goes to a log, printed only when the build fails.
{ cmake -S . -B build -DPG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" \
    -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DCMAKE_BUILD_TYPE=Release &&
  make -C build -j"$(nproc)"; } >/build/build.log 2>&1 || { tail -n 80 /build/build.log; exit 1; }
root=/pkg
make -C build install DESTDIR="$root" >/dev/null
find "$root" -name "*.so" -exec strip --strip-unneeded {} +
test -f "$root/usr/lib/postgresql/$PG_MAJOR/lib/timescaledb-tsl-$TS_VERSION.so" || { echo "TSL library missing"; exit 1; }
mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$PKG"
cp LICENSE "$root/usr/share/doc/$PKG/copyright"
arch=$(dpkg --print-architecture)
# Runtime dependencies: PostgreSQL of at least the minor built against, and the packages
# owning the shared libraries the modules link (libc6, libssl...). dpkg knows a library by
# the path its package ships: /lib/... on bookworm (before the /usr merge), /usr/lib/... after.
libdeps=$(find "$root" -name "*.so" -exec ldd {} + | awk "/=> \\//{print \$3}" | sort -u |
  while read -r lib; do dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null; done |
  cut -d: -f1 | sort -u | paste -sd, | sed "s/,/, /g")
[ -n "$libdeps" ] || { echo "no library dependencies found for the modules"; exit 1; }
size=$(du -sk "$root/usr" | cut -f1)
cat > "$root/DEBIAN/control" <<CTL
Package: $PKG
Version: $PKG_VERSION
Architecture: $arch
Maintainer: GePT test harness <root@localhost>
Installed-Size: $size
Depends: postgresql-$PG_MAJOR (>= ${PG_DEB_VERSION}), $libdeps
Provides: timescaledb-2-loader-postgresql-$PG_MAJOR
Conflicts: postgresql-$PG_MAJOR-timescaledb, timescaledb-2-loader-postgresql-$PG_MAJOR
Replaces: postgresql-$PG_MAJOR-timescaledb, timescaledb-2-loader-postgresql-$PG_MAJOR
Section: database
Priority: optional
Homepage: https://github.com/timescale/timescaledb
Description: TimescaleDB $TS_VERSION for PostgreSQL $PG_MAJOR (full edition, with TSL)
 Built from the release source with the patches in patches/timescaledb/, against
 postgresql-server-dev-$PG_MAJOR $PG_DEB_VERSION. Loader and versioned libraries in one package.
CTL
dpkg-deb --root-owner-group -Zxz --build "$root" "/out/${PKG}_${PKG_VERSION}_${arch}.deb" >/dev/null
chown -R "$OUT_UID" /out
'
secs=$(($(date +%s) - start))
mkdir -p "$OUT_BASE"
# One build per version/major/suite: drop the stale ones (another PostgreSQL minor, patch...).
for old in "$OUT_BASE/$VERSION-pg$PG_MAJOR-$SUITE-"*; do
  [[ -d "$old" && "$old" != "$OUT_DIR" ]] && rm -rf "$old"
done
mkdir -p "$OUT_DIR"
mv "$WORK"/out/*.deb "$OUT_DIR/"
deb=$(ls "$OUT_DIR"/*.deb)
log "built $deb ($(du -h "$deb" | cut -f1)) in $secs s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
