// Package pgcachetest starts the servers pgcache's tests need, PostgreSQL with logical
// replication and Redis, and is exported so applications can test their own code
// against the same stack.
//
// Servers run in containers started with testcontainers-go. Image names come from
// PGCACHE_TEST_POSTGRES_IMAGE and PGCACHE_TEST_REDIS_IMAGE and default to the official
// postgres:17 and redis:7. When PGCACHE_TEST_DATABASE_URL or PGCACHE_TEST_REDIS_URL is
// set, that server is used instead and no container is started for it.
//
// A test package shares one PostgreSQL and one Redis container: call [Main] from
// TestMain so they are removed when the package's tests end, then [SharedPostgres] and
// [SharedRedis] from tests. [Postgres.NewDatabase] gives a test a database of its own on
// the shared server. Tests that stop or restart a server start their own with
// [StartPostgres] or [StartRedis].
//
//	func TestMain(m *testing.M) { os.Exit(pgcachetest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		pg := pgcachetest.SharedPostgres(t)
//		dsn := pg.NewDatabase(t) // dropped when t ends
//		db, err := sql.Open("pgcache", dsn)
//		...
//	}
package pgcachetest
