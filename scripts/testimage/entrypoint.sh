#!/bin/sh
# Entrypoint of pgcache's locally built test image (Debian bookworm, PostgreSQL 15,
# Redis 7). It honours the interface of the official images so the same tests run
# against either:
#   postgres [-c name=value ...]   POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB,
#                                  POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_ARGS,
#                                  PGDATA, /docker-entrypoint-initdb.d/*.sql|*.sql.gz|*.sh
#   redis-server [args ...]        like the official redis image
# Like the official postgres image, a first start initialises the cluster with a
# temporary server on the Unix socket only, runs the init scripts, stops it and then
# starts the real server, so "ready to accept connections" is logged twice.
set -eu

PGBIN=/usr/lib/postgresql/15/bin
export PATH="$PGBIN:$PATH"

# Arguments that start with "-" go to the default program of the image.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
	set -- "${PGCACHE_IMAGE_DEFAULT:-postgres}" "$@"
fi

case "$1" in
redis-server)
	shift
	mkdir -p /data
	cd /data
	# No config file: listen everywhere without protected mode, as the official image does.
	exec redis-server --bind '*' --protected-mode no --dir /data "$@"
	;;
postgres)
	shift
	;;
*)
	exec "$@"
	;;
esac

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown -R postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	exec gosu postgres "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
		echo >&2 "error: database is uninitialized and POSTGRES_PASSWORD is not set;"
		echo >&2 "       set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust"
		exit 1
	fi
	pwfile=$(mktemp)
	printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words on purpose.
	initdb --username="$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
		${POSTGRES_INITDB_ARGS:-} >/dev/null
	rm -f "$pwfile"
	auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
	echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"

	pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start
	psql="psql -v ON_ERROR_STOP=1 --no-psqlrc -h /var/run/postgresql --username=$POSTGRES_USER"
	if [ "$POSTGRES_DB" != postgres ]; then
		$psql --dbname=postgres -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		[ -e "$f" ] || continue
		case "$f" in
		*.sh) echo "running $f"; . "$f" ;;
		*.sql) echo "running $f"; $psql --dbname="$POSTGRES_DB" -f "$f" ;;
		*.sql.gz) echo "running $f"; gunzip -c "$f" | $psql --dbname="$POSTGRES_DB" ;;
		*) echo "ignoring $f" ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop
	echo "PostgreSQL init process complete; ready for start up."
fi

exec postgres -D "$PGDATA" "$@"
