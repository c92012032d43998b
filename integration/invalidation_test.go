package integration_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/pgcachetest"
)

// Precise invalidation end to end: committed changes from any client evict exactly
// the entries they could affect, and nothing else. Each check compares what pgcache
// answers with what PostgreSQL answers (through pgx) and whether the answer came
// from the in-process cache (driver.Stats' L1 hit counter).

// orgSchema: 5 orgs, 100 users; user i belongs to org i%5+1 (user 5 to org 1).
var orgSchema = []string{
	`CREATE TABLE orgs (id int PRIMARY KEY, name text NOT NULL)`,
	`CREATE TABLE users (id int PRIMARY KEY, org_id int NOT NULL REFERENCES orgs, email text NOT NULL)`,
	`INSERT INTO orgs SELECT i, 'org ' || i FROM generate_series(1, 5) i`,
	`INSERT INTO users SELECT i, i % 5 + 1, 'user' || i || '@example.com' FROM generate_series(1, 100) i`,
}

const (
	userByID   = `SELECT id, org_id, email FROM users WHERE id = $1`
	usersByOrg = `SELECT id, email FROM users WHERE org_id = $1 ORDER BY id`
)

// probe reads through a pgcache *sql.DB and checks its answers against PostgreSQL.
type probe struct {
	t      *testing.T
	db     *sql.DB         // through pgcache
	admin  *sql.DB         // through pgx: the truth
	primed map[string]bool // statements whose schemes warm has registered
}

func newProbe(t *testing.T, db, admin *sql.DB) probe {
	return probe{t: t, db: db, admin: admin, primed: make(map[string]bool)}
}

// rowsText runs a query and renders its rows, so results compare as strings.
func rowsText(ctx context.Context, t *testing.T, db *sql.DB, query string, args ...any) string {
	t.Helper()
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		t.Fatalf("%s %v: %v", query, args, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%v;", vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s %v: %v", query, args, err)
	}
	return b.String()
}

// read returns pgcache's answer and whether it came from the in-process cache.
func (p probe) read(query string, args ...any) (string, bool) {
	p.t.Helper()
	before := dbStats(p.t, p.db).HitsL1
	got := rowsText(testContext(p.t), p.t, p.db, query, args...)
	return got, dbStats(p.t, p.db).HitsL1 > before
}

// expect checks that pgcache answers what PostgreSQL answers, from the cache
// when hit is true, from PostgreSQL otherwise.
func (p probe) expect(hit bool, query string, args ...any) {
	p.t.Helper()
	got, wasHit := p.read(query, args...)
	want := rowsText(testContext(p.t), p.t, p.admin, query, args...)
	if got != want {
		p.t.Fatalf("%s %v:\npgcache %s\npgx     %s", query, args, got, want)
	}
	if wasHit != hit {
		p.t.Fatalf("%s %v: cache hit %v, want %v; stats %+v", query, args, wasHit, hit, dbStats(p.t, p.db))
	}
}

// warm reads until the answer comes from the cache (a fill racing a recent
// invalidation of its own rows is born invalid and not kept).
//
// The first read of a statement registers its schemes (predicate column sets).
// A scheme registered while the change stream is still applying a transaction may
// have missed that transaction's row tags, so until the watermark has passed it,
// fills take the relation-wide tag instead, which any change of the relation
// evicts: the entry is cached, but not precisely. So the first time, warm commits
// a change elsewhere and waits until it is applied before filling.
func (p probe) warm(query string, args ...any) {
	p.t.Helper()
	if !p.primed[query] {
		p.primed[query] = true
		p.read(query, args...)
		p.write(`INSERT INTO stream_tick VALUES (1)`)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, hit := p.read(query, args...); hit {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s %v: not cached after 10s; stats %+v", query, args, dbStats(p.t, p.db))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// write commits statements from a plain pgx connection (not through the driver)
// and waits until pgcache has applied them.
func (p probe) write(statements ...string) {
	p.t.Helper()
	ctx := testContext(p.t)
	for _, s := range statements {
		if _, err := p.admin.ExecContext(ctx, s); err != nil {
			p.t.Fatalf("%s: %v", s, err)
		}
	}
	waitApplied(p.t, p.db, p.admin)
}

// TestRowLevelInvalidation: an update of row 43 evicts 43's entry and leaves row
// 42's cached; inserts and deletes evict the entries of the rows they touch.
func TestRowLevelInvalidation(t *testing.T) {
	t.Parallel()
	admin, db, _ := cachedDB(t, orgSchema)
	p := newProbe(t, db, admin)
	for _, id := range []int{42, 43, 10} {
		p.warm(userByID, id)
	}
	p.write(`UPDATE users SET email = 'changed@example.com' WHERE id = 43`)
	p.expect(true, userByID, 42)
	p.expect(false, userByID, 43)
	p.expect(true, userByID, 10)

	// A row that did not exist: its (empty) entry goes when it is inserted.
	p.warm(userByID, 101)
	p.write(`INSERT INTO users VALUES (101, 3, 'new@example.com')`)
	p.expect(false, userByID, 101)
	p.expect(true, userByID, 42)

	// A delete sends the old key: the key's entry goes.
	p.write(`DELETE FROM users WHERE id = 10`)
	p.expect(false, userByID, 10)
	p.expect(true, userByID, 42)
}

// TestOrgMove: an UPDATE that moves a row from org 1 to org 2 evicts both orgs'
// entries. With REPLICA IDENTITY FULL PostgreSQL sends the old org, and org 3's
// entry stays; under the default identity the old org is unknown, so every entry
// by org goes, and entries by key stay precise.
func TestOrgMove(t *testing.T) {
	t.Parallel()
	for _, full := range []bool{false, true} {
		t.Run(fmt.Sprintf("replica identity full=%v", full), func(t *testing.T) {
			t.Parallel()
			schema := orgSchema
			if full {
				schema = append(append([]string(nil), orgSchema...), `ALTER TABLE users REPLICA IDENTITY FULL`)
			}
			admin, db, _ := cachedDB(t, schema)
			p := newProbe(t, db, admin)
			warmAll := func() {
				for _, org := range []int{1, 2, 3} {
					p.warm(usersByOrg, org)
				}
				p.warm(userByID, 42)
				p.warm(userByID, 5)
			}
			warmAll()
			p.write(`UPDATE users SET org_id = 2 WHERE id = 5`) // user 5: org 1 -> 2
			p.expect(false, usersByOrg, 1)
			p.expect(false, usersByOrg, 2)
			p.expect(full, usersByOrg, 3)
			p.expect(false, userByID, 5)
			p.expect(true, userByID, 42)

			// A change that leaves the org alone: under the default identity
			// PostgreSQL does not say so, and the entries by org go all the same.
			warmAll()
			p.write(`UPDATE users SET email = 'moved@example.com' WHERE id = 5`)
			p.expect(full, usersByOrg, 1)
			p.expect(false, usersByOrg, 2)
			p.expect(full, usersByOrg, 3)
			p.expect(true, userByID, 42)

			// An insert carries every new value: precise under any identity.
			warmAll()
			p.write(`INSERT INTO users VALUES (200, 3, 'u200@example.com')`)
			p.expect(true, usersByOrg, 1)
			p.expect(true, usersByOrg, 2)
			p.expect(false, usersByOrg, 3)
			p.expect(true, userByID, 42)
		})
	}
}

// TestInListsAndAny: IN lists and = ANY($1) tag one entry per listed value.
func TestInListsAndAny(t *testing.T) {
	t.Parallel()
	admin, db, _ := cachedDB(t, orgSchema)
	p := newProbe(t, db, admin)
	const (
		in  = `SELECT id, email FROM users WHERE id IN ($1, $2, $3) ORDER BY id`
		any = `SELECT id, email FROM users WHERE id = ANY($1) ORDER BY id`
		lit = `SELECT id, email FROM users WHERE id IN (20, 21) ORDER BY id`
	)
	warmAll := func() {
		p.warm(in, 1, 2, 3)
		p.warm(in, 4, 5, 6)
		p.warm(any, []int64{7, 8})
		p.warm(lit)
	}
	warmAll()
	p.write(`UPDATE users SET email = 'two@example.com' WHERE id = 2`)
	p.expect(false, in, 1, 2, 3)
	p.expect(true, in, 4, 5, 6)
	p.expect(true, any, []int64{7, 8})
	p.expect(true, lit)

	warmAll()
	p.write(`UPDATE users SET email = 'eight@example.com' WHERE id = 8`, `DELETE FROM users WHERE id = 21`)
	p.expect(true, in, 1, 2, 3)
	p.expect(true, in, 4, 5, 6)
	p.expect(false, any, []int64{7, 8})
	p.expect(false, lit)
}

// TestJoinInvalidation: a join depends on both tables. The row-level predicate on
// users keeps its entries precise there; orgs, read through the join condition
// only, is read wide, so any change of orgs evicts it.
func TestJoinInvalidation(t *testing.T) {
	t.Parallel()
	admin, db, _ := cachedDB(t, orgSchema)
	p := newProbe(t, db, admin)
	const join = `SELECT u.email, o.name FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.id = $1`
	p.warm(join, 5)
	p.warm(join, 6)
	p.warm(userByID, 7)
	p.write(`UPDATE users SET email = 'six@example.com' WHERE id = 6`)
	p.expect(true, join, 5)
	p.expect(false, join, 6)

	p.warm(join, 6)
	p.write(`UPDATE orgs SET name = 'renamed' WHERE id = 4`)
	p.expect(false, join, 5)
	p.expect(false, join, 6)
	p.expect(true, userByID, 7) // does not read orgs
}

// TestTruncateInvalidation: TRUNCATE evicts every entry of the truncated tables,
// and only theirs.
func TestTruncateInvalidation(t *testing.T) {
	t.Parallel()
	admin, db, _ := cachedDB(t, append([]string{`CREATE TABLE notes (id int PRIMARY KEY, body text)`,
		`INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, 10) i`}, itemsSchema...))
	p := newProbe(t, db, admin)
	const note = `SELECT body FROM notes WHERE id = $1`
	const count = `SELECT count(*) FROM notes`
	p.warm(note, 1)
	p.warm(count)
	p.warm(itemQuery, 1)
	p.write(`TRUNCATE notes`)
	p.expect(false, note, 1)
	p.expect(false, count)
	p.expect(true, itemQuery, 1)
}

// TestWritersOutsideTheDriver: changes made by psql, in one transaction or
// several, evict like any other: invalidation comes from the WAL, not from the
// driver that wrote.
func TestWritersOutsideTheDriver(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	admin, db, dsn := cachedDB(t, orgSchema)
	p := newProbe(t, db, admin)
	pg := pgcachetest.SharedPostgres(t)
	psql := func(sql string) {
		t.Helper()
		if out, err := pg.Psql(ctx, dsn, sql); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		waitApplied(t, db, admin)
	}
	for _, id := range []int{30, 31, 32, 33} {
		p.warm(userByID, id)
	}
	psql(`UPDATE users SET email = 'psql@example.com' WHERE id = 30`)
	p.expect(false, userByID, 30)
	p.expect(true, userByID, 31)

	psql(`BEGIN; UPDATE users SET email = 'a@example.com' WHERE id = 31; DELETE FROM users WHERE id = 32; COMMIT;`)
	p.expect(false, userByID, 31)
	p.expect(false, userByID, 32)
	p.expect(true, userByID, 33)

	// A rolled-back transaction changes nothing and evicts nothing.
	p.warm(userByID, 31)
	psql(`BEGIN; UPDATE users SET email = 'never@example.com' WHERE id = 33; ROLLBACK;`)
	p.expect(true, userByID, 33)

	// And from pgx's own connection, outside database/sql.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `UPDATE users SET email = $1 WHERE id = $2`, "pgx@example.com", 33); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, db, admin)
	p.expect(false, userByID, 33)
	p.expect(true, userByID, 31)
}

// TestPartitionedInvalidation: a query on a partitioned table is cached (its
// partitions are what the publication lists) and a change in one partition
// evicts precisely.
func TestPartitionedInvalidation(t *testing.T) {
	t.Parallel()
	admin, db, _ := cachedDB(t, []string{
		`CREATE TABLE events (id int, at date NOT NULL, kind text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)`,
		`CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`,
		`CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`,
		`INSERT INTO events SELECT i, date '2025-06-01' + i * 30, 'k' || i FROM generate_series(1, 12) i`,
	})
	p := newProbe(t, db, admin)
	const byID = `SELECT id, at, kind FROM events WHERE id = $1`
	for _, id := range []int{1, 2, 11} {
		p.warm(byID, id)
	}
	p.write(`UPDATE events SET kind = 'changed' WHERE id = 11`) // in events_2026
	p.expect(true, byID, 1)
	p.expect(true, byID, 2)
	p.expect(false, byID, 11)
	// A row moving between partitions is a delete and an insert.
	p.warm(byID, 11)
	p.write(`UPDATE events SET at = '2025-12-31' WHERE id = 11`)
	p.expect(false, byID, 11)
	p.expect(true, byID, 2)
}

// TestSharedPreciseInvalidation: with Redis, a precise invalidation evicts one row's
// entry from Redis and from every instance's L1, and leaves the others everywhere.
func TestSharedPreciseInvalidation(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, orgSchema...)
	shared := withParams(dsn, steadyLag, "pgcache_redis="+url.QueryEscape(pgcachetest.SharedRedis(t).URL()))
	a, b := openDB(t, "pgcache", shared), openDB(t, "pgcache", shared)
	waitAllStreaming(t, admin, a, b)

	pa, pb := newProbe(t, a, admin), newProbe(t, b, admin)
	// The first read registers its scheme (users by id) in Redis as pending; the
	// leader adopts it at a transaction boundary and publishes from when it is
	// active, and until the instances have read that, entries of users are tagged
	// relation-wide: a change of another row evicts them.
	deadline := time.Now().Add(20 * time.Second)
	for {
		pa.warm(userByID, 1)
		mustExec(t, admin, `UPDATE users SET email = 'adopt@example.com' WHERE id = 99`)
		waitApplied(t, a, admin)
		if _, hit := pa.read(userByID, 1); hit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scheme of users by id was not adopted within 20s: %+v", dbStats(t, a))
		}
		time.Sleep(100 * time.Millisecond)
	}
	pa.warm(userByID, 42)
	pa.warm(userByID, 43)
	// b finds a's fills in Redis (they reach it through a queue: wait for them).
	for _, id := range []int{42, 43} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			before := dbStats(t, b).HitsL2
			rowsText(ctx, t, b, userByID, id)
			if dbStats(t, b).HitsL2 > before {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("instance b: user %d not found in Redis; %+v", id, dbStats(t, b))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	pb.expect(true, userByID, 42) // now in b's L1 too

	mustExec(t, admin, `UPDATE users SET email = 'shared@example.com' WHERE id = 43`)
	waitApplied(t, a, admin)
	waitApplied(t, b, admin)
	pa.expect(true, userByID, 42)
	pb.expect(true, userByID, 42)
	pa.expect(false, userByID, 43)
	pb.expect(false, userByID, 43)

	// A third instance, with an empty L1, finds 42 in Redis: Redis kept it.
	c := openDB(t, "pgcache", shared)
	waitAllStreaming(t, admin, c)
	before := dbStats(t, c)
	if got, want := rowsText(ctx, t, c, userByID, 42), rowsText(ctx, t, admin, userByID, 42); got != want {
		t.Fatalf("instance c: %s, want %s", got, want)
	}
	if after := dbStats(t, c); after.HitsL2 != before.HitsL2+1 {
		t.Fatalf("instance c: user 42 not a Redis hit; %+v", after)
	}
}

// TestReadYourWritesUnderConcurrency: many goroutines write through one *sql.DB in
// every way database/sql offers (autocommit, transactions, prepared statements)
// and read right after; no read ever returns an entry older than a write that
// completed before it began, although the staleness bound is a minute.
func TestReadYourWritesUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const workers, rounds = 6, 40
	_, db, _ := cachedDB(t, []string{`CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)`,
		fmt.Sprintf(`INSERT INTO counters SELECT i, 0 FROM generate_series(1, %d) i`, workers)})
	update, err := db.PrepareContext(ctx, `UPDATE counters SET n = n + 1 WHERE id = $1`)
	if err != nil {
		t.Fatal(err)
	}
	defer update.Close()

	var done atomic.Int64 // writes completed, all workers
	var started atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := 1; w <= workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				var n int
				if err := db.QueryRowContext(ctx, `SELECT n FROM counters WHERE id = $1`, w).Scan(&n); err != nil {
					errs <- err
					return
				}
				if n != i {
					errs <- fmt.Errorf("worker %d read n=%d after its %d writes", w, n, i)
					return
				}
				started.Add(1)
				var err error
				switch i % 3 {
				case 0:
					_, err = db.ExecContext(ctx, `UPDATE counters SET n = n + 1 WHERE id = $1`, w)
				case 1:
					_, err = update.ExecContext(ctx, w)
				case 2:
					var tx *sql.Tx
					if tx, err = db.BeginTx(ctx, nil); err == nil {
						if _, err = tx.ExecContext(ctx, `UPDATE counters SET n = n + 1 WHERE id = $1`, w); err == nil {
							err = tx.Commit()
						} else {
							_ = tx.Rollback()
						}
					}
				}
				if err != nil {
					errs <- err
					return
				}
				done.Add(1)
				if i%10 == 9 {
					// A pause: the fence lifts once the stream has passed
					// every write, and reads use the cache again.
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	// A reader of the whole table: its sum never misses a write that completed
	// before the read began, nor shows one that had not started.
	stop := make(chan struct{})
	var readerWG sync.WaitGroup
	readerWG.Add(1)
	go func() {
		defer readerWG.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			low := done.Load()
			var sum int64
			if err := db.QueryRowContext(ctx, `SELECT coalesce(sum(n), 0) FROM counters`).Scan(&sum); err != nil {
				errs <- err
				return
			}
			if high := started.Load(); sum < low || sum > high {
				errs <- fmt.Errorf("sum %d read with %d writes completed and %d started", sum, low, high)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	readerWG.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("stats: %+v", dbStats(t, db))
}

// TestStalenessBound: while the change stream cannot reach PostgreSQL, the cache
// is bypassed once the stream is further behind than pgcache_max_lag, so a change
// it cannot see is read within the bound; when the stream is back, caching resumes
// by itself.
func TestStalenessBound(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	role := fmt.Sprintf("app_%d", time.Now().UnixNano()) // roles are cluster-wide
	mustExec(t, admin, append([]string{
		`CREATE ROLE ` + role + ` LOGIN REPLICATION PASSWORD 'secret'`,
		`CREATE PUBLICATION app_pub FOR ALL TABLES`,
	}, itemsSchema...)...)
	mustExec(t, admin, `GRANT SELECT ON ALL TABLES IN SCHEMA public TO `+role)
	// Cleanups run last first: this one after the pgcache *sql.DB below is closed.
	t.Cleanup(func() { mustExec(t, admin, `DROP OWNED BY `+role, `DROP ROLE `+role) })
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, "secret")
	const maxLag = 2 * time.Second
	db := openDB(t, "pgcache", withParams(u.String(), "pgcache_publication=app_pub", "pgcache_max_lag="+maxLag.String()))
	waitAllStreaming(t, admin, db)
	// The reads use one session, opened now: it outlives the role's NOLOGIN.
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	name := func() (string, bool) {
		t.Helper()
		before := dbStats(t, db).HitsL1
		return itemName(ctx, t, conn, itemQuery, 1), dbStats(t, db).HitsL1 > before
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, hit := name(); hit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not cached: %+v", dbStats(t, db))
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Cut the stream off: it can no longer log in, and its session is ended.
	mustExec(t, admin, `ALTER ROLE `+role+` NOLOGIN`)
	var ended int
	if err := admin.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE usename = $1 AND backend_type = 'walsender'`, role).Scan(&ended); err != nil || ended == 0 {
		t.Fatalf("ending the walsender: %d ended, %v", ended, err)
	}
	mustExec(t, admin, `UPDATE items SET name = 'unseen by the stream' WHERE id = 1`)
	committed := time.Now()
	for {
		got, hit := name()
		if got == "unseen by the stream" {
			if hit {
				t.Fatal("the new value came from the cache, which cannot have seen it")
			}
			if st := dbStats(t, db); st.Usable {
				t.Fatalf("new value read while the cache says it is usable: %+v", st)
			}
			t.Logf("new value read %v after the commit (bound %v); %s", time.Since(committed).Round(time.Millisecond), maxLag, dbStats(t, db).UnusableReason)
			break
		}
		// Slack for a loaded machine: the bound is checked on the stream's
		// last progress, which may have been a little before the cut.
		if time.Since(committed) > maxLag+2*time.Second {
			t.Fatalf("still read %q %v after the commit; %+v", got, time.Since(committed), dbStats(t, db))
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Let it back in: it reconnects (a new temporary slot: history lost, the cache
	// is flushed) and caching resumes by itself.
	mustExec(t, admin, `ALTER ROLE `+role+` LOGIN`)
	deadline = time.Now().Add(30 * time.Second)
	for {
		got, hit := name()
		if got != "unseen by the stream" {
			t.Fatalf("read %q after the stream came back", got)
		}
		if hit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("caching did not resume within 30s: %+v", dbStats(t, db))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
