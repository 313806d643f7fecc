#!/usr/bin/env bash
# Run one stage of CI and record how long it took: `scripts/timed.sh NAME COMMAND...`.
# Prints "[stage] NAME: N s (ok|failed)" and appends "NAME<TAB>seconds<TAB>status" to
# $GEPT_STAGES_FILE (default .cache/ci-stages.tsv), which the pytest session prints as one
# table before its summary line. Exits with the command's status.
set -uo pipefail
name=$1
shift
file=${GEPT_STAGES_FILE:-$(dirname "$0")/../.cache/ci-stages.tsv}
mkdir -p "$(dirname "$file")"
start=$(date +%s)
"$@"
rc=$?
secs=$(($(date +%s) - start))
status=ok
((rc == 0)) || status=failed
printf '%s\t%s\t%s\n' "$name" "$secs" "$status" >>"$file"
printf '[stage] %s: %s s (%s)\n' "$name" "$secs" "$status"
exit "$rc"
