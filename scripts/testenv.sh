# Sourced by test.sh and demo.sh: makes sure the images the tests need exist and
# exports the environment that points testcontainers-go at them.
#
# With Docker that can pull, the official postgres:17 and redis:7 are used (pulled once).
# Where no registry can be reached, local images are built from Debian's packages
# (scripts/testimage/build.sh) and Ryuk, which would need pulling too, is disabled:
# containers are removed by the tests themselves and by test.sh's final sweep.
# PGCACHE_TEST_DATABASE_URL / PGCACHE_TEST_REDIS_URL skip containers altogether.

pgcache_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

pgcache_image_available() { # image -> present locally, or pulled now
	docker image inspect "$1" >/dev/null 2>&1 || timeout 300 docker pull -q "$1" >/dev/null 2>&1
}

if [ -z "${PGCACHE_TEST_DATABASE_URL:-}" ] || [ -z "${PGCACHE_TEST_REDIS_URL:-}" ]; then
	if ! docker info >/dev/null 2>&1; then
		echo "pgcache: Docker is not reachable; start it, or set PGCACHE_TEST_DATABASE_URL and PGCACHE_TEST_REDIS_URL" >&2
		return 1
	fi
	if [ -z "${PGCACHE_TEST_POSTGRES_IMAGE:-}" ] && [ -z "${PGCACHE_TEST_REDIS_IMAGE:-}" ]; then
		if pgcache_image_available postgres:17 && pgcache_image_available redis:7; then
			export PGCACHE_TEST_POSTGRES_IMAGE=postgres:17 PGCACHE_TEST_REDIS_IMAGE=redis:7
		else
			echo "pgcache: official images cannot be pulled; using local images built from Debian packages" >&2
			read -r PGCACHE_TEST_POSTGRES_IMAGE PGCACHE_TEST_REDIS_IMAGE _ < <("$pgcache_root/scripts/testimage/build.sh")
			export PGCACHE_TEST_POSTGRES_IMAGE PGCACHE_TEST_REDIS_IMAGE
			export TESTCONTAINERS_RYUK_DISABLED=true
		fi
	fi
	# Inside a container whose Docker daemon runs in the same network namespace (its
	# docker0 bridge is here), published ports are on localhost, not on the default
	# gateway that testcontainers-go assumes inside containers.
	if [ -z "${TESTCONTAINERS_HOST_OVERRIDE:-}" ] && [ -f /.dockerenv ] && [ -e /sys/class/net/docker0 ]; then
		export TESTCONTAINERS_HOST_OVERRIDE=localhost
	fi
fi

# Containers of this run carry its id, so the sweep below leaves other runs alone.
export PGCACHE_TEST_RUN_ID="${PGCACHE_TEST_RUN_ID:-$$-$RANDOM}"

# Removes containers left by this run's test binaries if they were killed before
# their own cleanup ran.
pgcache_sweep_containers() {
	local ids
	ids=$(docker ps -aq --filter "label=pgcache.test.run=$PGCACHE_TEST_RUN_ID" 2>/dev/null || true)
	[ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
}
