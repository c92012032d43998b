// Package driver is pgcache's database/sql driver for PostgreSQL, registered as
// "pgcache". It is a drop-in replacement for pgx's "pgx" driver:
//
//	import _ "github.com/pgcache/pgcache/driver"
//
//	db, err := sql.Open("pgcache", "postgres://app:secret@db:5432/app?sslmode=require")
//
// Every DSN pgx accepts works unchanged (URL and keyword/value forms, PG* environment
// variables, password and service files). pgcache's own options travel in the same DSN
// as pgcache_* parameters and are removed before pgx sees it; an unknown pgcache_*
// parameter makes sql.Open fail with an error that names it:
//
//	postgres://app@db/app?pgcache_mode=off
//	host=db dbname=app pgcache_mode=off
//
// The programmatic form takes a pgx.ConnConfig, so everything pgx can be configured
// with (tracers, TLS, dialers, hooks) is available:
//
//	cfg, err := driver.ParseConfig(dsn)
//	cfg.ConnConfig.Tracer = myTracer
//	db, err := driver.OpenDB(cfg)
//
// (*sql.Conn).Raw reaches the underlying *pgx.Conn, for COPY and other pgx-only work:
//
//	err = sqlConn.Raw(func(dc any) error {
//		conn, _ := driver.PgxConn(dc)
//		_, err := conn.CopyFrom(ctx, pgx.Identifier{"items"}, cols, src)
//		return err
//	})
//
// # Caching
//
// In the default mode (pgcache_mode=auto) a connector starts, with its first
// connection, a change stream (logical replication) that keeps its cache current, and
// answers cacheable queries from the cache while that stream is streaming and caught up
// (within pgcache_max_lag). Everything else, and everything while the stream is down,
// goes to PostgreSQL unchanged. With pgcache_redis, instances share a cache through
// Redis and elect one of them to consume the stream for all.
//
//	st, _ := driver.StatsOf(ctx, db) // hits, misses, bypasses by reason, stream state
//
// Per statement, /* pgcache:off */ and /* pgcache:ttl=30s */ in the SQL text; per call,
// WithoutCache(ctx) and WithTTL(ctx, d).
//
// The driver owns no caching logic of its own: it asks package querycache whether and
// how a statement may be cached, and delegates everything else to pgx's stdlib driver,
// whose results, errors and driver.ErrBadConn rules it keeps.
package driver
