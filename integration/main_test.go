package integration_test

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx", the reference driver

	_ "github.com/pgcache/pgcache/driver" // registers "pgcache"
	"github.com/pgcache/pgcache/pgcachetest"
)

// TestMain shares one PostgreSQL server among the package's tests and removes it at
// the end; tests get databases of their own on it (newEnv).
func TestMain(m *testing.M) { os.Exit(pgcachetest.Main(m)) }

// testTimeout bounds any one test's work against the servers, so a hung server
// fails the test instead of the whole run.
const testTimeout = 2 * time.Minute

// testContext returns a context that ends with the test or after testTimeout.
func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// openDB opens a *sql.DB with the named driver and closes it when the test ends.
func openDB(tb testing.TB, driverName, dsn string) *sql.DB {
	tb.Helper()
	db, err := sql.Open(driverName, dsn)
	if err != nil {
		tb.Fatalf("sql.Open(%q): %v", driverName, err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// mustExec runs statements through db and fails the test on the first error.
func mustExec(tb testing.TB, db *sql.DB, statements ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, s := range statements {
		if _, err := db.ExecContext(ctx, s); err != nil {
			tb.Fatalf("%s: %v", s, err)
		}
	}
}
