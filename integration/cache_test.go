package integration_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/driver"
	"github.com/pgcache/pgcache/invalidate"
	"github.com/pgcache/pgcache/pgcachetest"
)

// waitStreaming waits until db's change stream is streaming and its cache is used.
func waitStreaming(t *testing.T, db *sql.DB) {
	t.Helper()
	ctx := testContext(t)
	// The stream starts with the first connection.
	if err := db.PingContext(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := driver.StatsOf(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		if st.StreamProblem != "" {
			t.Fatalf("change stream: %s", st.StreamProblem)
		}
		if st.Usable && st.Watermark > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("change stream not streaming after 30s: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitApplied waits until db's cache has applied every change committed on the
// server so far (its watermark passed the server's current WAL position), so a read
// through db sees writes made by other clients before the call.
func waitApplied(t *testing.T, db *sql.DB, admin *sql.DB) {
	t.Helper()
	ctx := testContext(t)
	var lsnText string
	if err := admin.QueryRowContext(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsnText); err != nil {
		t.Fatal(err)
	}
	target, err := cdc.ParseLSN(lsnText)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := stats(t, db)
		if uint64(st.Watermark) >= uint64(target) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watermark %d did not reach %s within 30s: %+v", st.Watermark, lsnText, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func stats(t *testing.T, db *sql.DB) driver.Stats {
	t.Helper()
	st, err := driver.StatsOf(testContext(t), db)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestCacheHitAndInvalidation: a repeated point query is answered from the cache,
// and a write from another client (plain pgx) evicts it.
func TestCacheHitAndInvalidation(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)`,
		`INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) i`)
	db := openDB(t, "pgcache", dsn)
	waitStreaming(t, db)

	get := func(id int) string {
		t.Helper()
		var name string
		if err := db.QueryRowContext(ctx, `SELECT name FROM items WHERE id = $1`, id).Scan(&name); err != nil {
			t.Fatal(err)
		}
		return name
	}
	if got := get(42); got != "item 42" {
		t.Fatalf("got %q", got)
	}
	before := stats(t, db)
	for range 5 {
		if got := get(42); got != "item 42" {
			t.Fatalf("got %q", got)
		}
	}
	after := stats(t, db)
	if hits := after.HitsL1 - before.HitsL1; hits != 5 {
		t.Fatalf("%d L1 hits for 5 repeated reads; stats %+v", hits, after)
	}

	other, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(ctx, `UPDATE items SET name = 'changed' WHERE id = 42`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for get(42) != "changed" {
		if time.Now().After(deadline) {
			t.Fatalf("the cached row was not invalidated within 5s: %+v", stats(t, db))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReadYourWrites: a write through the driver is visible to the next read of
// the same *sql.DB at once, without waiting for the change stream.
func TestReadYourWrites(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	mustExec(t, openDB(t, "pgx", dsn), `CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)`,
		`INSERT INTO counters VALUES (1, 0)`)
	db := openDB(t, "pgcache", dsn)
	waitStreaming(t, db)
	for i := 1; i <= 50; i++ {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT n FROM counters WHERE id = $1`, 1).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != i-1 {
			t.Fatalf("read %d after %d increments", n, i-1)
		}
		if _, err := db.ExecContext(ctx, `UPDATE counters SET n = n + 1 WHERE id = 1`); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stats: %+v", stats(t, db))
}

// TestSharedRedisHit: two *sql.DB (two application instances) share Redis: what one
// filled, the other reads from Redis; a write from another client evicts it for both.
func TestSharedRedisHit(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)`,
		`INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) i`)
	redisURL := pgcachetest.SharedRedis(t).URL()
	prefixed := withParams(dsn, "pgcache_redis="+url.QueryEscape(redisURL))
	a, b := openDB(t, "pgcache", prefixed), openDB(t, "pgcache", prefixed)
	waitStreaming(t, a)
	waitStreaming(t, b)

	get := func(db *sql.DB, id int) string {
		t.Helper()
		var name string
		if err := db.QueryRowContext(ctx, `SELECT name FROM items WHERE id = $1`, id).Scan(&name); err != nil {
			t.Fatal(err)
		}
		return name
	}
	if got := get(a, 7); got != "item 7" {
		t.Fatalf("got %q", got)
	}
	// The fill reaches Redis through a queue: wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for stats(t, a).FillsL2 == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no Redis fill: %+v", stats(t, a))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := get(b, 7); got != "item 7" {
		t.Fatalf("got %q", got)
	}
	if st := stats(t, b); st.HitsL2 != 1 {
		t.Fatalf("instance b: want one Redis hit: %+v", st)
	}
	mustExec(t, admin, `UPDATE items SET name = 'seven' WHERE id = 7`)
	waitApplied(t, a, admin)
	waitApplied(t, b, admin)
	for name, db := range map[string]*sql.DB{"a": a, "b": b} {
		if got := get(db, 7); got != "seven" {
			t.Fatalf("instance %s after the update: got %q; %+v", name, got, stats(t, db))
		}
	}
}

// TestDDLFlush: with pgcache's DDL event triggers installed (pgcache setup), a schema
// change that changes results without changing rows reaches the cache at once.
func TestDDLFlush(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, invalidate.DDLTriggerSQL, `CREATE TABLE t (id int PRIMARY KEY, a text)`, `INSERT INTO t VALUES (1, 'x')`)
	db := openDB(t, "pgcache", dsn)
	start := time.Now()
	waitStreaming(t, db)
	t.Logf("streaming after %v", time.Since(start))
	columns := func() []string {
		t.Helper()
		for attempt := 0; ; attempt++ {
			rows, err := db.QueryContext(ctx, `SELECT * FROM t WHERE id = $1`, 1)
			if err != nil && attempt == 0 && strings.Contains(err.Error(), "SQLSTATE 0A000") {
				// pgx's own prepared statement predates the ALTER: PostgreSQL says
				// "cached plan must not change result type" once, as it does to pgx
				// without pgcache, and pgx prepares it again.
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			cols, err := rows.Columns()
			if err != nil {
				t.Fatal(err)
			}
			return cols
		}
	}
	columns()
	before := stats(t, db).HitsL1
	if got := columns(); len(got) != 2 || stats(t, db).HitsL1 != before+1 {
		t.Fatalf("columns %v, not a hit: %+v", got, stats(t, db))
	}
	mustExec(t, admin, `ALTER TABLE t ADD COLUMN b int NOT NULL DEFAULT 5`)
	start = time.Now()
	waitApplied(t, db, admin)
	t.Logf("applied after %v", time.Since(start))
	if got := columns(); len(got) != 3 {
		t.Fatalf("after ALTER TABLE ... ADD COLUMN, the cached result still has columns %v", got)
	}
}

// TestSessionChanges: a connection that changes its search_path or role reads what
// PostgreSQL would give it, never an entry cached under the other setting.
func TestSessionChanges(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	role := fmt.Sprintf("reader_%d", time.Now().UnixNano()) // roles are cluster-wide
	mustExec(t, admin,
		`CREATE SCHEMA a`, `CREATE SCHEMA b`,
		`CREATE TABLE a.t (id int PRIMARY KEY, v text)`, `CREATE TABLE b.t (id int PRIMARY KEY, v text)`,
		`INSERT INTO a.t VALUES (1, 'from a')`, `INSERT INTO b.t VALUES (1, 'from b')`,
		`CREATE ROLE `+role, `GRANT USAGE ON SCHEMA a, b TO `+role, `GRANT SELECT ON a.t, b.t TO `+role)
	t.Cleanup(func() { mustExec(t, admin, `DROP OWNED BY `+role, `DROP ROLE `+role) })
	db := openDB(t, "pgcache", dsn)
	waitStreaming(t, db)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	read := func(want string) {
		t.Helper()
		for range 2 { // the second read may come from the cache
			var v string
			if err := conn.QueryRowContext(ctx, `SELECT v FROM t WHERE id = $1`, 1).Scan(&v); err != nil {
				t.Fatal(err)
			}
			if v != want {
				t.Fatalf("read %q, want %q", v, want)
			}
		}
	}
	for _, step := range []struct{ set, want string }{
		{`SET search_path = a`, "from a"},
		{`SET search_path = b`, "from b"},
		{`SELECT set_config('search_path', 'a', false)`, "from a"},
		{`SET ROLE ` + role, "from a"},
		{`SET search_path = b`, "from b"},
		{`RESET ROLE`, "from b"},
	} {
		if _, err := conn.ExecContext(ctx, step.set); err != nil {
			t.Fatal(err)
		}
		read(step.want)
	}
	if st := stats(t, db); st.HitsL1 == 0 {
		t.Fatalf("nothing was cached: %+v", st)
	}
}
