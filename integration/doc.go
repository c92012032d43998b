// Package integration holds pgcache's end-to-end tests: the driver, the change stream
// and the caches together, against real PostgreSQL and Redis servers started with
// testcontainers-go (see package pgcachetest), and the ORMs that use the driver
// unchanged (GORM, sqlx, bun, ent).
package integration
