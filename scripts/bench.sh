#!/usr/bin/env bash
# Runs pgcache's benchmarks against real PostgreSQL and Redis containers (no race
# detector: it would measure itself).
#   scripts/bench.sh [benchmark regexp] [go test flags...]    (make bench)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/testenv.sh
. scripts/testenv.sh
trap pgcache_sweep_containers EXIT

pattern="${1:-.}"
shift || true
go test -run '^$' -bench "$pattern" -timeout 60m "$@" ./integration ./querycache ./cdc
