package integration_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/pgcache/pgcache/driver"
	"github.com/pgcache/pgcache/pgcachetest"
	"github.com/pgcache/pgcache/querycache"
)

// The cached read path end to end, against the real servers: prepared statements,
// transactions, singleflight, size limits, directives and per-query control. The
// counters of driver.Stats prove which path answered each read.

// itemsSchema is the table most read-path tests read: 1000 rows, grouped by grp
// (id % 10, 100 rows a group).
var itemsSchema = []string{
	`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, grp int NOT NULL)`,
	`INSERT INTO items SELECT i, 'item ' || i, i % 10 FROM generate_series(1, 1000) i`,
}

// waitAllStreaming starts the change streams of dbs and waits until each streams
// with its cache in use. A stream that starts after the database's last commit
// has no watermark until something commits, so it commits into a table of its
// own until every stream has applied one.
func waitAllStreaming(tb testing.TB, admin *sql.DB, dbs ...*sql.DB) {
	tb.Helper()
	ctx := testContext(tb)
	for _, db := range dbs {
		if err := db.PingContext(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	mustExec(tb, admin, `CREATE TABLE IF NOT EXISTS stream_tick (n int)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mustExec(tb, admin, `INSERT INTO stream_tick VALUES (1)`)
		ready := true
		for _, db := range dbs {
			st := dbStats(tb, db)
			if st.StreamProblem != "" {
				tb.Fatalf("change stream: %s", st.StreamProblem)
			}
			ready = ready && st.Usable && st.Watermark > 0
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("change streams not streaming after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dbStats is stats for tests and benchmarks.
func dbStats(tb testing.TB, db *sql.DB) driver.Stats {
	tb.Helper()
	st, err := driver.StatsOf(testContext(tb), db)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// steadyLag is the staleness bound (pgcache_max_lag) of the tests that count hits
// and misses: the default 1s is passed on a busy machine (every change stream
// decodes the WAL of every test's database), and the cache is then bypassed, which
// is right but not what those tests are about.
const steadyLag = "pgcache_max_lag=1m"

// cachedDB creates a database with schema, opens it through pgx (admin) and
// through pgcache with steadyLag and the given pgcache_* parameters, and waits
// until pgcache's cache is in use.
func cachedDB(t *testing.T, schema []string, params ...string) (admin, db *sql.DB, dsn string) {
	t.Helper()
	dsn = pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin = openDB(t, "pgx", dsn)
	mustExec(t, admin, schema...)
	db = openDB(t, "pgcache", withParams(dsn, append([]string{steadyLag}, params...)...))
	waitAllStreaming(t, admin, db)
	return admin, db, dsn
}

// rowQueryer is a *sql.DB, *sql.Conn or *sql.Tx.
type rowQueryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// itemName reads a name by id through q.
func itemName(ctx context.Context, t *testing.T, q rowQueryer, query string, id int) string {
	t.Helper()
	var name string
	if err := q.QueryRowContext(ctx, query, id).Scan(&name); err != nil {
		t.Fatalf("%s [%d]: %v", query, id, err)
	}
	return name
}

// stmtName reads a name by id through a prepared statement.
func stmtName(ctx context.Context, t *testing.T, s *sql.Stmt, id int) string {
	t.Helper()
	var name string
	if err := s.QueryRowContext(ctx, id).Scan(&name); err != nil {
		t.Fatalf("prepared statement [%d]: %v", id, err)
	}
	return name
}

const itemQuery = `SELECT name FROM items WHERE id = $1`

// counts are the counters a test checks, as differences between two snapshots.
// Bypassed sums the bypasses of every reason.
type counts struct {
	HitsL1, HitsL2, Misses, FillsL1, FillsOverLimit, Bypassed uint64
}

func countsOf(st driver.Stats) counts {
	c := counts{st.HitsL1, st.HitsL2, st.Misses, st.FillsL1, st.FillsOverLimit, 0}
	for _, n := range st.Bypasses {
		c.Bypassed += n
	}
	return c
}

// since returns what the counters of db did since before.
func since(t *testing.T, db *sql.DB, before counts) counts {
	t.Helper()
	now := countsOf(stats(t, db))
	return counts{now.HitsL1 - before.HitsL1, now.HitsL2 - before.HitsL2, now.Misses - before.Misses,
		now.FillsL1 - before.FillsL1, now.FillsOverLimit - before.FillsOverLimit, now.Bypassed - before.Bypassed}
}

func snapshot(t *testing.T, db *sql.DB) counts {
	t.Helper()
	return countsOf(stats(t, db))
}

// TestPreparedStatementsHit: statements prepared through database/sql, and by ORMs
// that prepare, are answered from the cache.
func TestPreparedStatementsHit(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, db, _ := cachedDB(t, itemsSchema)

	stmt, err := db.PrepareContext(ctx, itemQuery)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()
	before := snapshot(t, db)
	if got := stmtName(ctx, t, stmt, 5); got != "item 5" {
		t.Fatalf("got %q", got)
	}
	if d := since(t, db, before); d != (counts{Misses: 1, FillsL1: 1}) {
		t.Fatalf("first prepared read: %+v, want one miss and one fill", d)
	}
	before = snapshot(t, db)
	for range 3 {
		if got := stmtName(ctx, t, stmt, 5); got != "item 5" {
			t.Fatalf("got %q", got)
		}
	}
	// The same statement unprepared has the same key.
	if got := itemName(ctx, t, db, itemQuery, 5); got != "item 5" {
		t.Fatalf("got %q", got)
	}
	if d := since(t, db, before); d != (counts{HitsL1: 4}) {
		t.Fatalf("repeated reads: %+v, want 4 L1 hits", d)
	}

	// A statement prepared on one connection (*sql.Conn) hits as well.
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	connStmt, err := conn.PrepareContext(ctx, itemQuery)
	if err != nil {
		t.Fatal(err)
	}
	before = snapshot(t, db)
	if got := stmtName(ctx, t, connStmt, 5); got != "item 5" {
		t.Fatalf("got %q", got)
	}
	if d := since(t, db, before); d != (counts{HitsL1: 1}) {
		t.Fatalf("read through a connection's prepared statement: %+v, want one L1 hit", d)
	}
	connStmt.Close()
	conn.Close()

	t.Run("gorm PrepareStmt", func(t *testing.T) {
		gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: db}), &gorm.Config{Logger: logger.Discard, PrepareStmt: true})
		if err != nil {
			t.Fatal(err)
		}
		type item struct {
			ID   int
			Name string
			Grp  int
		}
		read := func() item {
			var it item
			if err := gdb.WithContext(ctx).Table("items").Where("id = ?", 7).Take(&it).Error; err != nil {
				t.Fatal(err)
			}
			return it
		}
		read()
		settle(t, db) // GORM's own queries at Open may count as writes
		before := snapshot(t, db)
		for range 3 {
			if it := read(); it != (item{7, "item 7", 7}) {
				t.Fatalf("got %+v", it)
			}
		}
		if d := since(t, db, before); d != (counts{HitsL1: 3}) {
			t.Fatalf("GORM reads: %+v, want 3 L1 hits", d)
		}
	})
	t.Run("sqlx Preparex", func(t *testing.T) {
		x := sqlx.NewDb(db, "pgx")
		st, err := x.PreparexContext(ctx, `SELECT id, name, grp FROM items WHERE id = $1`)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		type item struct {
			ID   int    `db:"id"`
			Name string `db:"name"`
			Grp  int    `db:"grp"`
		}
		var it item
		if err := st.GetContext(ctx, &it, 9); err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, db)
		for range 3 {
			it = item{}
			if err := st.GetContext(ctx, &it, 9); err != nil {
				t.Fatal(err)
			}
			if it != (item{9, "item 9", 9}) {
				t.Fatalf("got %+v", it)
			}
		}
		if d := since(t, db, before); d != (counts{HitsL1: 3}) {
			t.Fatalf("sqlx reads: %+v, want 3 L1 hits", d)
		}
	})
}

// TestTransactionsBypassCache: inside an explicit transaction nothing is read
// from the cache or written to it, whether the transaction was begun through
// database/sql or with a BEGIN statement, read-only or not, with prepared
// statements or not.
func TestTransactionsBypassCache(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, db, _ := cachedDB(t, itemsSchema)

	// Item 1 is cached, item 2 never read outside a transaction.
	itemName(ctx, t, db, itemQuery, 1)
	if got := itemName(ctx, t, db, itemQuery, 1); got != "item 1" {
		t.Fatalf("got %q", got)
	}
	stmt, err := db.PrepareContext(ctx, itemQuery)
	if err != nil {
		t.Fatal(err)
	}
	defer stmt.Close()

	inTx := func(t *testing.T, opts *sql.TxOptions, work func(tx *sql.Tx)) {
		t.Helper()
		before := stats(t, db)
		tx, err := db.BeginTx(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		work(tx)
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		after := stats(t, db)
		if d := since(t, db, countsOf(before)); d != (counts{Bypassed: d.Bypassed}) {
			t.Errorf("the transaction used the cache: %+v", d)
		}
		if after.FillsL2 != before.FillsL2 || after.Bypasses["in-transaction"] == before.Bypasses["in-transaction"] {
			t.Errorf("reads in the transaction not counted as bypasses: before %+v, after %+v", before.Stats, after.Stats)
		}
	}
	t.Run("read-write", func(t *testing.T) {
		inTx(t, nil, func(tx *sql.Tx) {
			if got := itemName(ctx, t, tx, itemQuery, 1); got != "item 1" {
				t.Fatalf("got %q", got)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE items SET name = 'in tx' WHERE id = 1`); err != nil {
				t.Fatal(err)
			}
			// Its own uncommitted write, which the cache does not hold.
			if got := itemName(ctx, t, tx, itemQuery, 1); got != "in tx" {
				t.Fatalf("read %q after the transaction's own update", got)
			}
			if got := stmtName(ctx, t, tx.StmtContext(ctx, stmt), 1); got != "in tx" {
				t.Fatalf("prepared statement in the transaction read %q", got)
			}
			if got := itemName(ctx, t, tx, itemQuery, 2); got != "item 2" {
				t.Fatalf("got %q", got)
			}
		})
	})
	t.Run("read-only", func(t *testing.T) {
		inTx(t, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}, func(tx *sql.Tx) {
			txStmt, err := tx.PrepareContext(ctx, itemQuery)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []int{1, 2, 1} {
				if got := stmtName(ctx, t, txStmt, id); got != fmt.Sprintf("item %d", id) {
					t.Fatalf("got %q", got)
				}
			}
		})
	})
	t.Run("BEGIN statement", func(t *testing.T) {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		before := snapshot(t, db)
		if _, err := conn.ExecContext(ctx, `BEGIN`); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(ctx, `UPDATE items SET name = 'begun' WHERE id = 1`); err != nil {
			t.Fatal(err)
		}
		if got := itemName(ctx, t, conn, itemQuery, 1); got != "begun" {
			t.Fatalf("read %q in a transaction begun by a statement", got)
		}
		if _, err := conn.ExecContext(ctx, `ROLLBACK`); err != nil {
			t.Fatal(err)
		}
		if d := since(t, db, before); d != (counts{Bypassed: 1}) {
			t.Errorf("the transaction used the cache: %+v", d)
		}
	})

	// Nothing read in the transactions was stored: once the writes of the rolled
	// back transactions no longer hold reads back (read-your-writes), item 2 is a
	// miss and item 1 the cached original.
	settle(t, db)
	before := snapshot(t, db)
	if got := itemName(ctx, t, db, itemQuery, 2); got != "item 2" {
		t.Fatalf("got %q", got)
	}
	if got := itemName(ctx, t, db, itemQuery, 1); got != "item 1" {
		t.Fatalf("got %q", got)
	}
	if d := since(t, db, before); d != (counts{HitsL1: 1, Misses: 1, FillsL1: 1}) {
		t.Fatalf("after the transactions: %+v, want item 2 a miss and item 1 a hit", d)
	}
}

// queryCounter is a pgx tracer that counts the queries with one SQL text that
// reach the server.
type queryCounter struct {
	sql string
	n   atomic.Int64
}

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if data.SQL == c.sql {
		c.n.Add(1)
	}
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// waitFor polls cond until it holds, failing t after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestSingleflight: concurrent misses of one key run one query on the server, and
// a leader whose context is cancelled mid-fill does not fail the followers.
//
// The fill is held on the server by a lock on the table, so every reader misses
// while it runs; the counters say when all have missed.
func TestSingleflight(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, itemsSchema...)
	cfg, err := driver.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	counter := &queryCounter{sql: itemQuery}
	cfg.ConnConfig.Tracer = counter
	cfg.MaxLag = time.Minute // as steadyLag
	db, err := driver.OpenDB(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	waitAllStreaming(t, admin, db)
	// The plan of the statement is made before the lock is taken.
	itemName(ctx, t, db, itemQuery, 1)

	const readers = 8
	// lockItems holds an exclusive lock on items until the returned func is called.
	lockItems := func() (release func()) {
		tx, err := admin.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `LOCK TABLE items IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		return func() { _ = tx.Rollback() }
	}
	type outcome struct {
		name string
		err  error
	}
	read := func(ctx context.Context, id int, out chan<- outcome) {
		var name string
		err := db.QueryRowContext(ctx, itemQuery, id).Scan(&name)
		out <- outcome{name, err}
	}

	t.Run("one query", func(t *testing.T) {
		release := lockItems()
		defer release()
		before, queriesBefore := snapshot(t, db), counter.n.Load()
		out := make(chan outcome, readers)
		for range readers {
			go read(ctx, 42, out)
		}
		waitFor(t, 30*time.Second, "every reader to miss", func() bool { return since(t, db, before).Misses == readers })
		time.Sleep(100 * time.Millisecond) // from the miss to joining the fill
		release()
		for range readers {
			if o := <-out; o.err != nil || o.name != "item 42" {
				t.Errorf("reader: %q, %v", o.name, o.err)
			}
		}
		if n := counter.n.Load() - queriesBefore; n != 1 {
			t.Errorf("%d concurrent misses ran %d queries on the server, want 1", readers, n)
		}
		if d := since(t, db, before); d != (counts{Misses: readers, FillsL1: 1}) {
			t.Errorf("counters: %+v, want %d misses and one fill", d, readers)
		}
		if got := itemName(ctx, t, db, itemQuery, 42); got != "item 42" {
			t.Errorf("got %q", got)
		}
	})

	t.Run("leader cancelled", func(t *testing.T) {
		release := lockItems()
		defer release()
		before, queriesBefore := snapshot(t, db), counter.n.Load()
		leaderCtx, cancelLeader := context.WithCancel(ctx)
		defer cancelLeader()
		leader := make(chan outcome, 1)
		go read(leaderCtx, 43, leader)
		waitFor(t, 30*time.Second, "the leader's query", func() bool { return counter.n.Load() > queriesBefore })
		out := make(chan outcome, readers-1)
		for range readers - 1 {
			go read(ctx, 43, out)
		}
		waitFor(t, 30*time.Second, "every reader to miss", func() bool { return since(t, db, before).Misses == readers })
		time.Sleep(100 * time.Millisecond)
		cancelLeader()
		if o := <-leader; !errors.Is(o.err, context.Canceled) {
			t.Errorf("cancelled leader: %q, %v; want context.Canceled", o.name, o.err)
		}
		release()
		for range readers - 1 {
			if o := <-out; o.err != nil || o.name != "item 43" {
				t.Errorf("follower of a cancelled leader: %q, %v", o.name, o.err)
			}
		}
		t.Logf("queries on the server for %d readers with a cancelled leader: %d", readers, counter.n.Load()-queriesBefore)
		if got := itemName(ctx, t, db, itemQuery, 43); got != "item 43" {
			t.Errorf("got %q", got)
		}
	})
}

// readAll returns every row of a query, scanned into any.
func readAll(ctx context.Context, t *testing.T, db *sql.DB, query string, args ...any) [][]any {
	t.Helper()
	rows, err := queryAny(ctx, db, query, args...)
	if err != nil {
		t.Fatalf("%s %v: %v", query, args, err)
	}
	return rows
}

// TestOverLimitStreams: a result over pgcache_max_rows or pgcache_max_bytes is
// streamed to the application complete and correct, whether it goes over at its
// first row, mid-way or at its last, and is not cached; a result at the limit is.
func TestOverLimitStreams(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	schema := []string{
		// by_rows: 100 rows in group 0, 101 in group 1, 899 in group 2 (ids 1..1100).
		// by_bytes: group 0 a single row of 100 kB, group 1 twenty of 5 kB, group 2
		// twenty of 1 kB.
		`CREATE TABLE by_rows (id int PRIMARY KEY, g int NOT NULL, v text NOT NULL)`,
		`INSERT INTO by_rows SELECT i, CASE WHEN i <= 100 THEN 0 WHEN i <= 201 THEN 1 ELSE 2 END, 'v' || i
			FROM generate_series(1, 1100) i`,
		`CREATE TABLE by_bytes (id int PRIMARY KEY, g int NOT NULL, v text NOT NULL)`,
		`INSERT INTO by_bytes VALUES (1, 0, repeat('a', 100000))`,
		`INSERT INTO by_bytes SELECT i, 1, repeat(chr(97 + i % 26), 5000) FROM generate_series(2, 21) i`,
		`INSERT INTO by_bytes SELECT i, 2, repeat(chr(97 + i % 26), 1000) FROM generate_series(22, 41) i`,
	}
	admin, db, _ := cachedDB(t, schema, "pgcache_max_rows=100", "pgcache_max_bytes=64KiB")

	cases := []struct {
		name, table string
		group, rows int
		cached      bool
	}{
		{"rows at the limit", "by_rows", 0, 100, true},
		{"rows over at the last row", "by_rows", 1, 101, false},
		{"rows over mid-way", "by_rows", 2, 899, false},
		{"bytes over at the first row", "by_bytes", 0, 1, false},
		{"bytes over mid-way", "by_bytes", 1, 20, false},
		{"bytes within the limit", "by_bytes", 2, 20, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			query := `SELECT id, v FROM ` + c.table + ` WHERE g = $1 ORDER BY id`
			want := readAll(ctx, t, admin, query, c.group)
			if len(want) != c.rows {
				t.Fatalf("pgx read %d rows, want %d", len(want), c.rows)
			}
			for run := 1; run <= 2; run++ {
				before := snapshot(t, db)
				got := readAll(ctx, t, db, query, c.group)
				if diff := outcomeDiff(want, nil, got, nil); diff != "" {
					t.Fatalf("run %d differs from pgx (-pgx +pgcache):\n%s", run, diff)
				}
				d := since(t, db, before)
				switch {
				case c.cached && run == 1 && d != (counts{Misses: 1, FillsL1: 1}):
					t.Fatalf("run %d: %+v, want a miss and a fill", run, d)
				case c.cached && run == 2 && d != (counts{HitsL1: 1}):
					t.Fatalf("run %d: %+v, want a hit", run, d)
				case !c.cached && d != (counts{Misses: 1, FillsOverLimit: 1}):
					t.Fatalf("run %d: %+v, want a miss over the limit, not cached", run, d)
				}
			}
		})
	}

	t.Run("concurrent readers", func(t *testing.T) {
		query := `SELECT id, v FROM by_rows WHERE g = $1 ORDER BY id`
		want := readAll(ctx, t, admin, query, 2)
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := queryAny(ctx, db, query, 2)
				if err != nil {
					t.Error(err)
					return
				}
				if diff := outcomeDiff(want, nil, got, nil); diff != "" {
					t.Errorf("a concurrent reader differs from pgx:\n%.2000s", diff)
				}
			}()
		}
		wg.Wait()
	})

	t.Run("closed early", func(t *testing.T) {
		// One connection: the next query runs where the abandoned one ran.
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		rows, err := conn.QueryContext(ctx, `SELECT id, v FROM by_rows WHERE g = $1 ORDER BY id`, 2)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 150 && rows.Next(); i++ {
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		var n int
		var first string
		if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM by_rows WHERE g = $1`, 1).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(ctx, `SELECT v FROM by_rows WHERE id = $1`, 150).Scan(&first); err != nil {
			t.Fatal(err)
		}
		if n != 101 || first != "v150" {
			t.Fatalf("after closing an over-limit result early: count %d, v %q", n, first)
		}
	})
}

// TestDirectivesAndControl: /* pgcache:off */, /* pgcache:ttl=... */, WithoutCache
// and WithTTL.
func TestDirectivesAndControl(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	_, db, _ := cachedDB(t, itemsSchema)

	bypasses := func(reason string) uint64 { return stats(t, db).Bypasses[reason] }
	t.Run("off", func(t *testing.T) {
		for _, q := range []string{
			`/* pgcache:off */ SELECT name FROM items WHERE id = $1`,
			`SELECT name FROM items /* pgcache: off */ WHERE id = $1`,
			`-- pgcache:off
			SELECT name FROM items WHERE id = $1`,
		} {
			before, off := snapshot(t, db), bypasses(querycache.ReasonDirectiveOff.String())
			for range 3 {
				if got := itemName(ctx, t, db, q, 11); got != "item 11" {
					t.Fatalf("got %q", got)
				}
			}
			if d := since(t, db, before); d != (counts{Bypassed: 3}) {
				t.Errorf("%q used the cache: %+v", q, d)
			}
			if n := bypasses(querycache.ReasonDirectiveOff.String()) - off; n != 3 {
				t.Errorf("%q: %d directive bypasses for 3 reads", q, n)
			}
		}
	})
	t.Run("WithoutCache", func(t *testing.T) {
		itemName(ctx, t, db, itemQuery, 12) // cached
		before, off := snapshot(t, db), bypasses("context-off")
		noCache := driver.WithoutCache(ctx)
		for _, id := range []int{12, 13, 13} {
			if got := itemName(noCache, t, db, itemQuery, id); got != fmt.Sprintf("item %d", id) {
				t.Fatalf("got %q", got)
			}
		}
		if d := since(t, db, before); d != (counts{Bypassed: 3}) {
			t.Errorf("reads WithoutCache used the cache: %+v", d)
		}
		if n := bypasses("context-off") - off; n != 3 {
			t.Errorf("%d context bypasses for 3 reads", n)
		}
	})

	// Reads that bypass the cache before their statement is analyzed count as
	// possible writes (a SELECT may call a function that writes), so the reads
	// after them wait for the change stream (read-your-writes): let that settle.
	settle(t, db)

	// expires checks that an entry read through read is a hit at once and a miss
	// after ttl (the in-process cache checks expiry to 100ms).
	expires := func(t *testing.T, ttl time.Duration, read func()) {
		t.Helper()
		before := snapshot(t, db)
		read()
		read()
		if d := since(t, db, before); d != (counts{Misses: 1, FillsL1: 1, HitsL1: 1}) {
			t.Fatalf("fill and hit: %+v; bypasses %v", d, stats(t, db).Bypasses)
		}
		time.Sleep(ttl + 200*time.Millisecond)
		before = snapshot(t, db)
		read()
		if d := since(t, db, before); d != (counts{Misses: 1, FillsL1: 1}) {
			t.Fatalf("after the TTL: %+v, want a miss; bypasses %v", d, stats(t, db).Bypasses)
		}
	}
	t.Run("ttl directive", func(t *testing.T) {
		expires(t, time.Second, func() { itemName(ctx, t, db, `/* pgcache:ttl=1s */ SELECT name FROM items WHERE id = $1`, 21) })
	})
	t.Run("WithTTL", func(t *testing.T) {
		short := driver.WithTTL(ctx, time.Second)
		expires(t, time.Second, func() { itemName(short, t, db, itemQuery, 22) })
	})
	t.Run("WithTTL over the directive", func(t *testing.T) {
		short := driver.WithTTL(ctx, time.Second)
		expires(t, time.Second, func() { itemName(short, t, db, `/* pgcache:ttl=1h */ SELECT name FROM items WHERE id = $1`, 23) })
	})
	t.Run("default TTL outlives them", func(t *testing.T) {
		before := snapshot(t, db)
		itemName(ctx, t, db, itemQuery, 24)
		time.Sleep(1200 * time.Millisecond)
		itemName(ctx, t, db, itemQuery, 24)
		if d := since(t, db, before); d != (counts{Misses: 1, FillsL1: 1, HitsL1: 1}) {
			t.Fatalf("%+v, want the second read a hit; bypasses %v", d, stats(t, db).Bypasses)
		}
	})
}

// settle reads through db until a read is not held back by the read-your-writes
// fence.
func settle(t *testing.T, db *sql.DB) {
	t.Helper()
	ctx := testContext(t)
	waitFor(t, 30*time.Second, "the read-your-writes fence to settle", func() bool {
		before := stats(t, db).Bypasses["read-your-writes"]
		itemName(ctx, t, db, itemQuery, 1000)
		return stats(t, db).Bypasses["read-your-writes"] == before
	})
}

// TestAllowDeny: pgcache_allow and pgcache_deny decide which relations' queries are
// cached: schema.name, name (any schema) and schema.* patterns; deny wins; a
// query reading any relation that may not be cached is not cached.
func TestAllowDeny(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, `CREATE SCHEMA extra`)
	for _, table := range []string{"public.items", "public.secret", "extra.kept", "extra.other", "extra.secret"} {
		mustExec(t, admin, `CREATE TABLE `+table+` (id int PRIMARY KEY, v text NOT NULL)`,
			`INSERT INTO `+table+` VALUES (1, '`+table+`')`)
	}
	allowDeny := openDB(t, "pgcache", withParams(dsn, steadyLag, "pgcache_allow=public.*,extra.kept", "pgcache_deny=public.secret"))
	denyName := openDB(t, "pgcache", withParams(dsn, steadyLag, "pgcache_deny=secret"))
	waitAllStreaming(t, admin, allowDeny, denyName)

	cases := []struct {
		db     *sql.DB
		dbName string
		from   string
		cached bool
	}{
		{allowDeny, "allow=public.*,extra.kept deny=public.secret", "public.items", true},
		{allowDeny, "allow=public.*,extra.kept deny=public.secret", "extra.kept", true},
		{allowDeny, "allow=public.*,extra.kept deny=public.secret", "public.secret", false},
		{allowDeny, "allow=public.*,extra.kept deny=public.secret", "extra.other", false},
		{allowDeny, "allow=public.*,extra.kept deny=public.secret", "public.items JOIN extra.other USING (id)", false},
		{denyName, "deny=secret", "public.items", true},
		{denyName, "deny=secret", "extra.secret", false},
		{denyName, "deny=secret", "public.secret", false},
		{denyName, "deny=secret", "extra.kept JOIN extra.secret USING (id)", false},
	}
	for _, c := range cases {
		t.Run(c.dbName+" "+c.from, func(t *testing.T) {
			query := `SELECT count(*) FROM ` + c.from + ` WHERE id = $1`
			if !strings.Contains(c.from, "JOIN") {
				query = `SELECT v FROM ` + c.from + ` WHERE id = $1`
			}
			before, filtered := snapshot(t, c.db), stats(t, c.db).Bypasses["filtered"]
			for range 2 {
				var v string
				if err := c.db.QueryRowContext(ctx, query, 1).Scan(&v); err != nil {
					t.Fatal(err)
				}
			}
			d := since(t, c.db, before)
			nFiltered := stats(t, c.db).Bypasses["filtered"] - filtered
			if c.cached && (d != counts{Misses: 1, FillsL1: 1, HitsL1: 1} || nFiltered != 0) {
				t.Errorf("want cached: %+v, %d filtered", d, nFiltered)
			}
			if !c.cached && (d != counts{Bypassed: 2} || nFiltered != 2) {
				t.Errorf("want filtered: %+v, %d filtered", d, nFiltered)
			}
		})
	}
}

// TestRedisFaults: what goes wrong with Redis never reaches the application:
// corrupt entries, a full Redis, a wrong password, and Redis stopped under load
// and started again. The Redis is the test's own, and the in-process cache is kept
// too small to hold anything (pgcache_l1_bytes=1), so reads go to Redis.
func TestRedisFaults(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	rd, err := pgcachetest.StartRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Terminate(context.Background()) })
	client, err := rd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, itemsSchema...)
	db := openDB(t, "pgcache", withParams(withRedis(dsn, rd.URL()), steadyLag, "pgcache_l1_bytes=1"))
	waitAllStreaming(t, admin, db)

	// redisHit reads item id until it is answered from Redis (its fill reaches
	// Redis through a queue), checking every answer.
	redisHit := func(t *testing.T, id int, timeout time.Duration) {
		t.Helper()
		want := fmt.Sprintf("item %d", id)
		waitFor(t, timeout, fmt.Sprintf("a Redis hit of item %d", id), func() bool {
			before := snapshot(t, db)
			if got := itemName(ctx, t, db, itemQuery, id); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
			d := since(t, db, before)
			if d.HitsL1 != 0 {
				t.Fatalf("an L1 hit with pgcache_l1_bytes=1: %+v", d)
			}
			if d.HitsL2 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
			return d.HitsL2 == 1
		})
	}
	// Entry keys live under the database's Redis namespace.
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	entryPattern := "{" + driver.DefaultRedisNamespace(cfg.Database) + "}:e:*"
	// dropEntries deletes the cache entries, and only them: the tag buckets and
	// the meta key stay, so pgcache does not see Redis as having lost its writes.
	dropEntries := func(t *testing.T) {
		t.Helper()
		keys, err := client.Keys(ctx, entryPattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > 0 {
			if err := client.Del(ctx, keys...).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	entryKey := func(t *testing.T) string {
		t.Helper()
		keys, err := client.Keys(ctx, entryPattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 {
			t.Fatalf("want one entry in Redis, have %d", len(keys))
		}
		return keys[0]
	}

	t.Run("corrupt entry", func(t *testing.T) {
		if err := client.ConfigSet(ctx, "notify-keyspace-events", "Kg").Err(); err != nil {
			t.Fatal(err)
		}
		corruptions := []struct {
			name    string
			corrupt func(key string) error
		}{
			{"undecodable value", func(key string) error { return client.HSet(ctx, key, "v", "\xffnot a result").Err() }},
			{"bad tag list", func(key string) error { return client.HSet(ctx, key, "t", "9999999,3:abc").Err() }},
			{"not a hash", func(key string) error { return client.Set(ctx, key, "foreign", time.Minute).Err() }},
		}
		for i, c := range corruptions {
			t.Run(c.name, func(t *testing.T) {
				dropEntries(t)
				id := 31 + i
				redisHit(t, id, 10*time.Second)
				key := entryKey(t)
				sub := client.Subscribe(ctx, "__keyspace@0__:"+key)
				defer sub.Close()
				if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
					t.Fatal(err)
				}
				if err := c.corrupt(key); err != nil {
					t.Fatal(err)
				}
				before := stats(t, db)
				if got := itemName(ctx, t, db, itemQuery, id); got != fmt.Sprintf("item %d", id) {
					t.Fatalf("read %q from a corrupt entry", got)
				}
				after := stats(t, db)
				if d := since(t, db, countsOf(before)); d.HitsL2 != 0 || d.Misses != 1 || after.Corrupt != before.Corrupt+1 {
					t.Fatalf("a corrupt entry: %+v, Corrupt %d -> %d; want a miss, counted as corrupt", d, before.Corrupt, after.Corrupt)
				}
				deadline := time.After(5 * time.Second)
				for deleted := false; !deleted; {
					select {
					case m := <-sub.Channel():
						deleted = m.Payload == "del"
					case <-deadline:
						t.Fatal("the corrupt entry was not deleted")
					}
				}
				redisHit(t, id, 10*time.Second) // filled again
			})
		}
	})

	t.Run("full", func(t *testing.T) {
		dropEntries(t)
		redisHit(t, 51, 10*time.Second)
		before := stats(t, db)
		// Over the limit at once: a value larger than the limit, then the limit.
		if err := client.Set(ctx, "junk", strings.Repeat("j", 2<<20), 0).Err(); err != nil {
			t.Fatal(err)
		}
		for _, kv := range [][2]string{{"maxmemory-policy", "noeviction"}, {"maxmemory", "1mb"}} {
			if err := client.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			_ = client.ConfigSet(ctx, "maxmemory", "0").Err()
			_ = client.Del(ctx, "junk").Err()
		}()
		for id := 52; id < 62; id++ {
			if got := itemName(ctx, t, db, itemQuery, id); got != fmt.Sprintf("item %d", id) {
				t.Fatalf("got %q", got)
			}
		}
		waitFor(t, 10*time.Second, "fills refused by a full Redis", func() bool { return stats(t, db).Full > before.Full })
		// A change Redis cannot record must not leave its stale entry readable
		// for longer than the staleness bound: the consumer cannot apply it to
		// Redis nor publish it, so it stops acknowledging; the instance stops
		// hearing from it and stops using its cache, and Redis refuses readers
		// whose watermark it has not applied. (This *sql.DB's bound is 1m, so
		// wait that long at most.)
		mustExec(t, admin, `UPDATE items SET name = 'changed' WHERE id = 51`)
		waitFor(t, 70*time.Second, "reads to give the new value", func() bool {
			return itemName(ctx, t, db, itemQuery, 51) == "changed"
		})
		for range 3 {
			if got := itemName(ctx, t, db, itemQuery, 51); got != "changed" {
				t.Fatalf("read %q after the update, with Redis full: %+v", got, stats(t, db))
			}
		}
		mustExec(t, admin, `UPDATE items SET name = 'item 51' WHERE id = 51`)
		after := stats(t, db)
		t.Logf("with Redis full: %+v", after.Stats)
		if after.Errors == before.Errors || after.Full == before.Full {
			t.Errorf("errors with Redis full not counted: %+v", after.Stats)
		}
		// With room again, Redis is used again (once the change stream, which
		// could not apply changes to it, has reconnected).
		if err := client.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
			t.Fatal(err)
		}
		if err := client.Del(ctx, "junk").Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		redisHit(t, 62, time.Minute)
		t.Logf("Redis hits again %v after it had room", time.Since(start).Round(time.Millisecond))
	})

	t.Run("wrong password", func(t *testing.T) {
		dropEntries(t)
		if err := client.ConfigSet(ctx, "requirepass", "right").Err(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			opts := client.Options()
			opts.Password = "right"
			authed := redis.NewClient(opts)
			defer authed.Close()
			if err := authed.ConfigSet(context.Background(), "requirepass", "").Err(); err != nil {
				t.Errorf("reset requirepass: %v", err)
			}
		}()
		u, err := url.Parse(rd.URL())
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword("", "wrong")
		wrong := openDB(t, "pgcache", withParams(withRedis(dsn, u.String()), steadyLag, "pgcache_l1_bytes=1"))
		if err := wrong.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			mustExec(t, admin, `INSERT INTO stream_tick VALUES (1)`)
			id := 70 + i%10
			if got := itemName(ctx, t, wrong, itemQuery, id); got != fmt.Sprintf("item %d", id) {
				t.Fatalf("got %q", got)
			}
			time.Sleep(20 * time.Millisecond)
		}
		st := stats(t, wrong)
		t.Logf("with a wrong Redis password: usable %v (%s), %+v", st.Usable, st.UnusableReason, st.Stats)
		if st.Errors+st.StreamErrors == 0 {
			t.Errorf("no errors counted with a wrong Redis password: %+v", st)
		}
		if st.HitsL2 != 0 || st.FillsL2 != 0 {
			t.Errorf("Redis used with a wrong password: %+v", st.Stats)
		}
	})

	t.Run("stopped under load", func(t *testing.T) {
		dropEntries(t)
		redisHit(t, 100, time.Minute)
		var (
			stop          atomic.Bool
			reads, failed atomic.Int64
			firstFailure  atomic.Pointer[string]
			wg            sync.WaitGroup
		)
		for g := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; !stop.Load(); i++ {
					id := 100 + i%40
					var name string
					err := db.QueryRowContext(ctx, itemQuery, id).Scan(&name)
					reads.Add(1)
					if err != nil || name != fmt.Sprintf("item %d", id) {
						failed.Add(1)
						msg := fmt.Sprintf("item %d: %q, %v", id, name, err)
						firstFailure.CompareAndSwap(nil, &msg)
					}
				}
			}()
		}
		defer func() {
			stop.Store(true)
			wg.Wait()
		}()
		time.Sleep(300 * time.Millisecond)
		before := stats(t, db)
		if err := rd.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		time.Sleep(1500 * time.Millisecond)
		down := stats(t, db)
		if err := rd.Start(ctx); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		t.Logf("Redis down for %v; counters then: %+v", restarted.Sub(stopped).Round(time.Millisecond), down.Stats)
		if down.Errors == before.Errors || down.BreakerTrips == before.BreakerTrips {
			t.Errorf("Redis down: errors %d -> %d, breaker trips %d -> %d; want both counted",
				before.Errors, down.Errors, before.BreakerTrips, down.BreakerTrips)
		}
		waitFor(t, 60*time.Second, "Redis hits after the restart", func() bool {
			time.Sleep(50 * time.Millisecond)
			return stats(t, db).HitsL2 > down.HitsL2+20
		})
		t.Logf("Redis hits again %v after the restart", time.Since(restarted).Round(time.Millisecond))
		stop.Store(true)
		wg.Wait()
		if n := failed.Load(); n > 0 {
			t.Fatalf("%d of %d reads failed or read wrong values; first: %s", n, reads.Load(), *firstFailure.Load())
		}
		t.Logf("%d reads, none failed; counters: %+v", reads.Load(), stats(t, db).Stats)
	})
}

// TestFenceReleasesUnderReads: the reads that the read-your-writes fence holds
// back must not raise it again. They cannot write (their plans are cacheable, so
// every function they call is immutable); if they counted as writes, a steady
// stream of reads would keep the cache off for as long as the server's WAL moves,
// which on a busy server is always. Here the WAL moves all the time through
// logical messages nobody subscribes to.
func TestFenceReleasesUnderReads(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	admin, db, _ := cachedDB(t, itemsSchema)
	itemName(ctx, t, db, itemQuery, 1)
	waitApplied(t, db, admin)

	busy, stopBusy := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for busy.Err() == nil {
			_, _ = admin.ExecContext(busy, `SELECT pg_logical_emit_message(false, 'pgcache-test', 'x')`)
		}
	}()
	defer func() {
		stopBusy()
		wg.Wait()
	}()

	mustExec(t, db, `UPDATE items SET name = name WHERE id = 1000`)
	before, fenced := snapshot(t, db), stats(t, db).Bypasses["read-your-writes"]
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		itemName(ctx, t, db, itemQuery, 1)
		if since(t, db, before).HitsL1 > 0 {
			return
		}
	}
	t.Errorf("reads held back by read-your-writes for 3s after one write: %d bypassed, %+v",
		stats(t, db).Bypasses["read-your-writes"]-fenced, since(t, db, before))
}
