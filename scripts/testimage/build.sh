#!/usr/bin/env bash
# Builds pgcache's local test images where no container registry can be reached:
# a Debian bookworm root filesystem with postgresql-15 and redis-server, made by
# mmdebstrap from the machine's own Debian mirror, imported with `docker import`.
#
#   scripts/testimage/build.sh        build (or reuse) both images, print their names
#
# Images already built from the same entrypoint are reused. Names (defaults):
#   PGCACHE_LOCAL_POSTGRES_IMAGE  pgcache-local/postgres:15
#   PGCACHE_LOCAL_REDIS_IMAGE     pgcache-local/redis:7
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
pg_image=${PGCACHE_LOCAL_POSTGRES_IMAGE:-pgcache-local/postgres:15}
redis_image=${PGCACHE_LOCAL_REDIS_IMAGE:-pgcache-local/redis:7}
# The label ties an image to the entrypoint it was built with: change it, rebuild.
revision=$(cat "$here/entrypoint.sh" "$here/build.sh" | sha256sum | cut -c1-16)

current() { # image -> succeeds when it exists and was built from this revision
	[ "$(docker image inspect -f '{{index .Config.Labels "pgcache.revision"}}' "$1" 2>/dev/null)" = "$revision" ]
}

if current "$pg_image" && current "$redis_image"; then
	echo "$pg_image $redis_image (reused)"
	exit 0
fi

# The mirror comes from this machine's apt configuration, never from this file.
mirror() {
	local uri
	uri=$(awk '
		/^URIs:/ { u = $2 }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm" && u != "") { print u; exit } }
	' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
	if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
	fi
	[ -n "$uri" ] || { echo "build.sh: no Debian bookworm mirror in /etc/apt sources" >&2; return 1; }
	echo "$uri"
}

if ! command -v mmdebstrap >/dev/null; then
	echo "build.sh: installing mmdebstrap" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "build.sh: building the bookworm root filesystem (about a minute)" >&2
mmdebstrap --quiet --variant=minbase --mode=root \
	--include=postgresql-15,redis-server,gosu \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--customize-hook='rm -rf "$1"/var/lib/postgresql/15/main "$1"/etc/postgresql/15/main "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
	--customize-hook="copy-in $here/entrypoint.sh /usr/local/bin" \
	--customize-hook='chmod 755 "$1"/usr/local/bin/entrypoint.sh' \
	bookworm "$work/rootfs.tar" "$(mirror)"

docker import \
	-c "LABEL pgcache.revision=$revision" \
	-c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	-c 'ENV PGDATA=/var/lib/postgresql/data' \
	-c 'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]' \
	-c 'CMD ["postgres"]' \
	-c 'EXPOSE 5432 6379' \
	"$work/rootfs.tar" "$pg_image" >/dev/null

# The Redis image is the same filesystem with another default command.
cid=$(docker create "$pg_image")
docker commit --change 'CMD ["redis-server"]' "$cid" "$redis_image" >/dev/null
docker rm "$cid" >/dev/null
echo "$pg_image $redis_image (built)"
