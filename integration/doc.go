// Package integration holds pgcache's end-to-end tests against real PostgreSQL
// (and, once the caches exist, Redis) servers started with testcontainers-go (see
// package pgcachetest). It has no code of its own outside tests.
//
// The tests run the same work through pgx's database/sql driver, the reference,
// and through pgcache on the same database, and require the same values and the
// same errors (compare and check in compare_test.go): types and NULLs, CRUD,
// prepared statements, transactions, cancellation, a server that goes away and
// comes back, COPY through (*sql.Conn).Raw, DSN forms, and the ORMs that use the
// driver unchanged (GORM, sqlx, bun, ent; the ent client is generated into
// internal/ent). The benchmarks compare the two drivers on the same server.
package integration
