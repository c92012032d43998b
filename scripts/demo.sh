#!/usr/bin/env bash
# Runs pgcache's demo: starts PostgreSQL and Redis in containers (building local images
# where no registry can be reached) and runs `pgcache demo` against them.
#   scripts/demo.sh [pgcache demo flags...]     (make demo)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/testenv.sh
. scripts/testenv.sh
trap pgcache_sweep_containers EXIT
go run ./cmd/pgcache demo "$@"
