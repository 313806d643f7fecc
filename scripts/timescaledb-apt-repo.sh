#!/usr/bin/env bash
# A stand-in for Timescale's apt repository, for the test and demo hosts: the packages built by
# scripts/build-timescaledb.sh in a signed apt repository laid out like Timescale's
# (<uri>/debian/dists/<suite>/main/binary-<arch>/, key at <uri>/gpgkey), served over HTTP on
# the Docker bridge address, which containers on this machine reach and the outside does not.
# The role's production install path then runs with only its repository URI and key URL
# changed (inventories/demo/group_vars/demo.yml).
#   scripts/timescaledb-apt-repo.sh [start]   (re)index and sign if the packages changed; serve
#   scripts/timescaledb-apt-repo.sh stop      stop the server this checkout started
# Idempotent: the index is rebuilt only when the set of packages or the key changes, and a
# server already running from this checkout (pidfile) is left alone.
# The signing key is made once per machine (ed25519, no passphrase, never leaves .cache/): it
# proves only that the index came from this machine's build, which is all a test host needs.
# Environment: GEPT_APT_REPO_ADDR (default: the docker0 address), GEPT_APT_REPO_PORT (8707).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[apt-repo] %s\n' "$*"; }
die() { printf '[apt-repo] ERROR: %s\n' "$*" >&2; exit 1; }

BUILDS=.cache/timescaledb
ROOT=$PWD/.cache/apt-repo
KEYDIR=$PWD/.cache/apt-repo-gnupg
PIDFILE=$PWD/.cache/apt-repo.pid
PORT=${GEPT_APT_REPO_PORT:-8707}
ADDR=${GEPT_APT_REPO_ADDR:-$(ip -4 -o addr show docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')}
[[ -n "$ADDR" ]] || die "no docker0 address (is the Docker engine running?); set GEPT_APT_REPO_ADDR"

running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$(cat "$PIDFILE")/cmdline" | grep -q "http.server.*$ROOT"
}

if [[ "${1:-start}" == stop ]]; then
  if running; then
    kill "$(cat "$PIDFILE")" && log "stopped the server (pid $(cat "$PIDFILE"))"
  else
    log "no server from this checkout is running"
  fi
  rm -f "$PIDFILE"
  exit 0
fi

command -v apt-ftparchive >/dev/null || die "apt-ftparchive missing (apt-get install apt-utils)"
command -v gpg >/dev/null || die "gpg missing (apt-get install gpg)"

# --- the machine's signing key ---------------------------------------------------------
export GNUPGHOME=$KEYDIR
if [[ ! -f "$KEYDIR/.made" ]]; then
  rm -rf "$KEYDIR" && mkdir -m 0700 -p "$KEYDIR"
  gpg --batch --quiet --passphrase '' --quick-gen-key \
    "GePT stand-in TimescaleDB repository ($(hostname), throwaway) <root@localhost>" ed25519 sign never
  touch "$KEYDIR/.made"
  log "made a throwaway signing key for this machine"
fi
FPR=$(gpg --batch --with-colons --list-secret-keys | awk -F: '/^fpr:/ {print $10; exit}')

# --- index and sign (only when the packages or the key changed) ---------------------------
shopt -s nullglob
debs=("$BUILDS"/*/*.deb)
((${#debs[@]})) || die "no package in $BUILDS (run scripts/build-timescaledb.sh first)"
stamp=$({ echo "$FPR"; sha256sum "${debs[@]}"; } | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$ROOT/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  tmp=$(mktemp -d "$PWD/.cache/apt-repo.XXXXXX")
  mkdir -p "$tmp/debian/pool/main"
  suites=()
  for deb in "${debs[@]}"; do
    # Build directories are named <version>-pg<major>-<suite>-<key>.
    suite=$(basename "$(dirname "$deb")" | awk -F- '{print $(NF-1)}')
    arch=$(dpkg-deb -f "$deb" Architecture)
    mkdir -p "$tmp/debian/pool/main/$suite" "$tmp/debian/dists/$suite/main/binary-$arch"
    cp "$deb" "$tmp/debian/pool/main/$suite/"
    [[ " ${suites[*]} " == *" $suite "* ]] || suites+=("$suite")
  done
  for suite in "${suites[@]}"; do
    (
      cd "$tmp/debian"
      for bin in dists/"$suite"/main/binary-*; do
        apt-ftparchive packages "pool/main/$suite" >"$bin/Packages"
        gzip -9nk "$bin/Packages"
      done
      archs=$(cd "dists/$suite/main" && ls -d binary-* | sed 's/^binary-//' | paste -sd' ')
      apt-ftparchive -o APT::FTPArchive::Release::Origin=timescaledb \
        -o APT::FTPArchive::Release::Label=timescaledb \
        -o APT::FTPArchive::Release::Suite="$suite" -o APT::FTPArchive::Release::Codename="$suite" \
        -o APT::FTPArchive::Release::Components=main \
        -o APT::FTPArchive::Release::Architectures="$archs" \
        release "dists/$suite" >"$tmp/Release.$suite"
      mv "$tmp/Release.$suite" "dists/$suite/Release"
      gpg --batch --yes --local-user "$FPR" --clearsign -o "dists/$suite/InRelease" "dists/$suite/Release"
      gpg --batch --yes --local-user "$FPR" -abs -o "dists/$suite/Release.gpg" "dists/$suite/Release"
    )
  done
  gpg --batch --armor --export "$FPR" >"$tmp/gpgkey"
  echo "$stamp" >"$tmp/.stamp"
  # Swap in place: the server keeps serving the directory by its path.
  mkdir -p "$ROOT"
  find "$ROOT" -mindepth 1 -delete
  cp -a "$tmp/." "$ROOT/"
  rm -rf "$tmp"
  log "indexed and signed ${#debs[@]} package(s) for ${suites[*]} (key $FPR)"
fi

# --- serve ------------------------------------------------------------------------------
url="http://$ADDR:$PORT"
if running; then
  log "serving $url (pid $(cat "$PIDFILE"), already running)"
else
  nohup setsid python3 -m http.server --bind "$ADDR" --directory "$ROOT" "$PORT" \
    >"$PWD/.cache/apt-repo.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('$url/gpgkey', timeout=2)" 2>/dev/null && break
    running || die "the server did not start (port $PORT in use?): $(tail -n 3 .cache/apt-repo.log)"
    sleep 0.2
  done
  log "serving $url (pid $(cat "$PIDFILE"))"
fi
# What is served is what was indexed here (not another checkout's server on the same port).
served=$(python3 -c "import urllib.request; print(urllib.request.urlopen('$url/.stamp', timeout=5).read().decode().strip())") ||
  die "$url does not answer"
[[ "$served" == "$stamp" ]] || die "$url serves another index (another checkout's server?); stop it or set GEPT_APT_REPO_PORT"
