#!/usr/bin/env bash
# Runs pgcache's whole test suite against real PostgreSQL and Redis containers.
#   scripts/test.sh [go test flags...]    (make test)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/testenv.sh
. scripts/testenv.sh
trap pgcache_sweep_containers EXIT

# Packages with concurrency run under the race detector; the rest without (faster).
race_pkgs=$(go list ./... | grep -E '/(driver|querycache|cdc|invalidate|integration|pgcachetest)(/|$)' || true)
other_pkgs=$(go list ./... | grep -v -E '/(driver|querycache|cdc|invalidate|integration|pgcachetest)(/|$)' || true)

echo "== go test -race (${race_pkgs//$'\n'/ })"
go test -race -count=1 -timeout 40m "$@" $race_pkgs
if [ -n "$other_pkgs" ]; then
	echo "== go test"
	go test -count=1 -timeout 20m "$@" $other_pkgs
fi
