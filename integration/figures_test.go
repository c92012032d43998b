package integration_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/driver"
)

// The figures of precise invalidation, measured end to end against the real
// servers:
//
//	BenchmarkCommitToInvalid: how long after a commit returns every instance stops
//	  serving the old row (p50-ms, p99-ms), under a background load of row changes,
//	  with the in-process cache alone (mode=local) and shared through Redis
//	  (mode=shared: two instances, one elected leader applying to Redis and fanning
//	  out, the other following).
//	BenchmarkApplyThroughput: how many row changes a second the change stream and
//	  the invalidator apply, from one 100k-row transaction (tx=bulk) and from 10k
//	  one-row transactions (tx=small), alone and shared through Redis.
//	BenchmarkZipfHitRatio: the hit ratio of a read-mostly workload (1% updates,
//	  Zipf-distributed ids) with precise invalidation (row tags from id = $1) and
//	  with table-wide invalidation (id + 0 = $1, which gives no row tags).
//
// Every writer here is a plain pgx connection (another client, not through
// pgcache) with synchronous_commit = on, PostgreSQL's default: the test server
// runs with synchronous_commit = off, under which a commit's WAL may wait up to
// wal_writer_delay (200 ms) before it is flushed, and logical decoding sends only
// flushed WAL, so the figures would measure the WAL writer's schedule.
//
// Each benchmark's default run takes well under a minute. For the figures (a few
// minutes each):
//
//	go test -c -o /tmp/figures.test ./integration && cd integration
//	/tmp/figures.test -test.run '^$' -test.bench 'BenchmarkCommitToInvalid' -test.benchtime 500x
//	/tmp/figures.test -test.run '^$' -test.bench 'BenchmarkApplyThroughput' -test.benchtime 5x
//	/tmp/figures.test -test.run '^$' -test.bench 'BenchmarkZipfHitRatio' -test.benchtime 10s

// figuresRows is the size of the kv table of BenchmarkCommitToInvalid and
// BenchmarkZipfHitRatio (ids 1..figuresRows; row 0 is the probe row).
const figuresRows = 10_000

// figuresPointSQL reads one row by key: its entries carry the row tag of id.
const figuresPointSQL = `SELECT v FROM kv WHERE id = $1`

// figuresWideSQL reads the same row, but id + 0 = $1 is no predicate the
// analyzer can tag: its entries carry kv's wide tag, which every change of kv
// invalidates.
const figuresWideSQL = `SELECT v FROM kv WHERE id + 0 = $1`

// figuresWait bounds every wait of these benchmarks for the cache or the stream:
// generous, so that a loaded machine slows them down without failing them.
const figuresWait = time.Minute

// figuresOverload is the commit-to-invalid latency past which
// BenchmarkCommitToInvalid concludes that the change stream does not keep up with
// its background load.
const figuresOverload = 5 * time.Second

// figuresRedisDB is the Redis database of the package's benchmarks (the last of
// Redis's 16; see benchRedisDB). Keys are namespaced by the database's name as
// well, which is each benchmark's own.
const figuresRedisDB = 15

// figuresEnv is one benchmark's database: a kv table, its DSN and a pgx *sql.DB.
type figuresEnv struct {
	ctx   context.Context
	dsn   string  // superuser URL, at the container's own address where possible
	admin *sql.DB // through pgx's stdlib driver
}

// newFiguresEnv creates a database with kv (id int PRIMARY KEY, v bigint) holding
// ids 0..rows, all v = 0.
func newFiguresEnv(b *testing.B, rows int) *figuresEnv {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel)
	dsn := directDatabase(b, ctx)
	admin := openDB(b, "pgx", dsn)
	mustExec(b, admin,
		`CREATE TABLE kv (id int PRIMARY KEY, v bigint NOT NULL)`,
		fmt.Sprintf(`INSERT INTO kv SELECT i, 0 FROM generate_series(0, %d) i`, rows),
		`VACUUM ANALYZE kv`)
	return &figuresEnv{ctx: ctx, dsn: dsn, admin: admin}
}

// open opens n pgcache instances of the database with pgcache_max_lag=1m, shared
// through Redis when shared (on a replication slot of their own), and waits until
// each uses its cache. In shared mode the leader (the instance consuming the
// change stream) comes first.
func (e *figuresEnv) open(b *testing.B, shared bool, n int) []*sql.DB {
	b.Helper()
	params := []string{steadyLag}
	if shared {
		params = append(params,
			"pgcache_redis="+url.QueryEscape(figuresRedisURL(b, e.ctx)),
			fmt.Sprintf("pgcache_slot=figures_%08x", rand.Uint32()))
	}
	dsn := withParams(e.dsn, params...)
	dbs := make([]*sql.DB, n)
	for i := range dbs {
		dbs[i] = openDB(b, "pgcache", dsn)
		dbs[i].SetMaxIdleConns(8)
	}
	waitAllStreaming(b, e.admin, dbs...)
	if !shared {
		return dbs
	}
	deadline := time.Now().Add(figuresWait)
	for {
		for i, db := range dbs {
			if strings.HasPrefix(figuresStats(b, e.ctx, db).Stream, "leading") {
				return append([]*sql.DB{db}, append(dbs[:i:i], dbs[i+1:]...)...)
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("no instance leads after %v", figuresWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// figuresRedisURL is the shared Redis's URL (at the container's own address where
// possible), naming figuresRedisDB.
func figuresRedisURL(b *testing.B, ctx context.Context) string {
	b.Helper()
	return redisURLWithDB(b, directRedisURL(b, ctx), figuresRedisDB)
}

// writer opens a plain pgx connection with synchronous_commit = on, closed when
// the benchmark ends.
func (e *figuresEnv) writer(b *testing.B) *pgx.Conn {
	b.Helper()
	cfg, err := pgx.ParseConfig(e.dsn)
	if err != nil {
		b.Fatal(err)
	}
	cfg.RuntimeParams["synchronous_commit"] = "on"
	conn, err := pgx.ConnectConfig(e.ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// figuresStats is dbStats under the benchmark's own context (dbStats makes a
// context per call, which the polling loops here would pile up).
func figuresStats(b *testing.B, ctx context.Context, db *sql.DB) driver.Stats {
	b.Helper()
	st, err := driver.StatsOf(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// figuresWaitLSN waits until db's watermark reaches target.
func figuresWaitLSN(b *testing.B, ctx context.Context, db *sql.DB, target cdc.LSN) {
	b.Helper()
	deadline := time.Now().Add(figuresWait)
	for {
		st := figuresStats(b, ctx, db)
		if uint64(st.Watermark) >= uint64(target) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("watermark %d did not reach %s within %v: %+v", st.Watermark, target, figuresWait, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// figuresWaitApplied waits until db has applied every change committed so far.
func (e *figuresEnv) figuresWaitApplied(b *testing.B, db *sql.DB) {
	b.Helper()
	var lsnText string
	if err := e.admin.QueryRowContext(e.ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsnText); err != nil {
		b.Fatal(err)
	}
	target, err := cdc.ParseLSN(lsnText)
	if err != nil {
		b.Fatal(err)
	}
	figuresWaitLSN(b, e.ctx, db, target)
}

// figuresRead reads v of row id through db with query.
func figuresRead(ctx context.Context, db *sql.DB, query string, id int) (int64, error) {
	var v int64
	err := db.QueryRowContext(ctx, query, id).Scan(&v)
	return v, err
}

// figuresPercentile returns the p-th quantile (0 < p ≤ 1) of ds, nearest rank.
func figuresPercentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func figuresMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// figuresLoad is a background load of one-row updates of kv from plain pgx
// connections at a paced rate.
type figuresLoad struct {
	changes atomic.Int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// startLoad updates random rows 1..rows of kv, rate rows a second in all, one row
// per transaction, from conns connections. Each paces itself with a ticker and
// catches up what it fell behind; changes counts what was done.
func (e *figuresEnv) startLoad(b *testing.B, rate float64, conns, rows int) *figuresLoad {
	b.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	l := &figuresLoad{cancel: cancel}
	for range conns {
		conn := e.writer(b)
		l.wg.Go(func() {
			r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			perConn := rate / float64(conns)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			start := time.Now()
			var done int64
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				for due := int64(time.Since(start).Seconds()*perConn) - done; due > 0 && ctx.Err() == nil; due-- {
					if _, err := conn.Exec(ctx, `UPDATE kv SET v = v + 1 WHERE id = $1`, r.IntN(rows)+1); err != nil {
						if ctx.Err() == nil {
							b.Errorf("background load: %v", err)
						}
						return
					}
					done++
					l.changes.Add(1)
				}
			}
		})
	}
	return l
}

// stop ends the load and waits for its connections to be idle.
func (l *figuresLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// BenchmarkCommitToInvalid measures how long after a committed update of a cached
// row returns to its writer every pgcache instance serves the new row, under a
// background load of 2000 and 500 row changes a second (one-row updates of random
// rows of a 10k-row table from two plain pgx connections). Each iteration is one
// probe: the probe row's entry is made cached in every instance (read until an L1
// hit), a separate pgx connection updates it, and from the moment its Exec returns
// each instance is read every 100µs until it gives the new value.
//
//	mode=local   one instance, in-process cache only (its own change stream).
//	mode=shared  two instances sharing Redis: the leader consumes the stream and
//	             applies to Redis and its own cache, then fans out through a Redis
//	             stream; the follower applies the fan-out to its cache.
//
// Metrics: p50-ms and p99-ms until every instance served the new row (in shared
// mode also per role: leader-*, follower-*), changes/s, the background load
// achieved, and probes, the probes measured: when one takes over figuresOverload
// the stream does not keep up with the load (its backlog, and the latency, grow
// for as long as the run lasts), which is logged, and the remaining iterations
// are skipped. ns/op is reported as 0: the iterations also wait for fills.
func BenchmarkCommitToInvalid(b *testing.B) {
	for _, rate := range []int{2000, 500} {
		for _, mode := range []string{"local", "shared"} {
			b.Run(fmt.Sprintf("load=%d/mode=%s", rate, mode), func(b *testing.B) {
				benchCommitToInvalid(b, rate, mode == "shared")
			})
		}
	}
}

func benchCommitToInvalid(b *testing.B, rate int, shared bool) {
	e := newFiguresEnv(b, figuresRows)
	ctx := e.ctx
	n := 1
	if shared {
		n = 2
	}
	dbs := e.open(b, shared, n)
	probe := e.writer(b)
	load := e.startLoad(b, float64(rate), 2, figuresRows)
	defer load.stop()
	time.Sleep(500 * time.Millisecond) // the load and the stream reach their pace

	lat := make([][]time.Duration, len(dbs)) // per instance
	var all []time.Duration                  // until every instance served the new row
	var value int64
	overloaded := false
	changes0, start := load.changes.Load(), time.Now()
	for b.Loop() {
		if overloaded {
			continue // b.Loop must run to its end; there is nothing left to measure
		}
		figuresEnsureCached(b, ctx, dbs, 0, value)
		old := value
		value++
		if _, err := probe.Exec(ctx, `UPDATE kv SET v = $1 WHERE id = 0`, value); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		seen, err := figuresSpin(ctx, dbs, value, old, t0)
		if err != nil {
			b.Fatal(err)
		}
		for i, d := range seen {
			lat[i] = append(lat[i], d)
		}
		all = append(all, slices.Max(seen))
		if slices.Max(seen) > figuresOverload {
			// The stream applies less than the load commits: its backlog, and
			// every later probe's latency, only grow.
			overloaded = true
			b.Logf("the change stream does not keep up with %d changes/s: a probe took %v; %d probes measured, the remaining iterations skipped",
				rate, slices.Max(seen).Round(time.Millisecond), len(all))
		}
	}
	achieved := float64(load.changes.Load()-changes0) / time.Since(start).Seconds()
	load.stop()

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(figuresMS(figuresPercentile(all, 0.50)), "p50-ms")
	b.ReportMetric(figuresMS(figuresPercentile(all, 0.99)), "p99-ms")
	if shared {
		for i, role := range []string{"leader", "follower"} {
			b.ReportMetric(figuresMS(figuresPercentile(lat[i], 0.50)), role+"-p50-ms")
			b.ReportMetric(figuresMS(figuresPercentile(lat[i], 0.99)), role+"-p99-ms")
		}
	}
	b.ReportMetric(achieved, "changes/s")
	b.ReportMetric(float64(len(all)), "probes")
	if achieved < 0.9*float64(rate) {
		b.Logf("the background load reached %.0f changes/s of the %d asked (a busy machine)", achieved, rate)
	}
}

// figuresEnsureCached reads row id (figuresPointSQL) through every instance until
// the read is an L1 hit, so that it is cached there. A fill stamped before the
// watermark passed the row's last invalidation (the watermark waits until the
// commit is visible to new snapshots) is born invalid, so this may take several
// reads after each probe. Every read must give want.
func figuresEnsureCached(b *testing.B, ctx context.Context, dbs []*sql.DB, id int, want int64) {
	b.Helper()
	for i, db := range dbs {
		deadline := time.Now().Add(figuresWait)
		for {
			before := figuresStats(b, ctx, db).HitsL1
			v, err := figuresRead(ctx, db, figuresPointSQL, id)
			if err != nil {
				b.Fatal(err)
			}
			if v != want {
				b.Fatalf("instance %d read %d for row %d, want %d (stale)", i, v, id, want)
			}
			st := figuresStats(b, ctx, db)
			if st.HitsL1 > before {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("instance %d: row %d not cached after %v: %+v", i, id, figuresWait, st)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// figuresSpin reads the probe row through every instance (each from a goroutine of
// its own, every 100µs) until it gives want, and returns how long after t0 each
// did. Until then each must give old.
func figuresSpin(ctx context.Context, dbs []*sql.DB, want, old int64, t0 time.Time) ([]time.Duration, error) {
	seen := make([]time.Duration, len(dbs))
	errs := make([]error, len(dbs))
	var wg sync.WaitGroup
	for i, db := range dbs {
		wg.Go(func() {
			for {
				v, err := figuresRead(ctx, db, figuresPointSQL, 0)
				now := time.Now()
				switch {
				case err != nil:
					errs[i] = err
					return
				case v == want:
					seen[i] = now.Sub(t0)
					return
				case v != old:
					errs[i] = fmt.Errorf("instance %d read %d for the probe row, want %d or %d", i, v, old, want)
					return
				case now.Sub(t0) > figuresWait:
					errs[i] = fmt.Errorf("instance %d still serves the old probe row %v after its update", i, figuresWait)
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
		})
	}
	wg.Wait()
	return seen, errors.Join(errs...)
}

// applyRows is the size of the kv table of BenchmarkApplyThroughput, and the
// changes of one bulk round.
const applyRows = 100_000

// applySmallTxs is the number of one-row transactions of one small round.
const applySmallTxs = 10_000

// BenchmarkApplyThroughput measures how many row changes a second the change
// stream and the invalidator apply. A scheme of kv is registered first (entries of
// SELECT v FROM kv WHERE id = $1 are cached, and checked to survive a change of
// another row), so every change gives a row tag. Each iteration is one round of
// changes generated on the server by a plain pgx connection:
//
//	tx=bulk   one transaction updating all 100k rows (past the 10k row tags a
//	          transaction may have per relation, it invalidates kv whole: decoding
//	          and tagging still see every row).
//	tx=small  10k one-row transactions, from a DO block that commits after each.
//
// The round is timed from the start of the writes until the instance's watermark
// (driver.Stats.Watermark) reaches the WAL insert position read by the last
// transaction just before its commit (set_config, read back after the DO block):
// its commit record ends past it, and the position is independent of what other
// databases of the server write afterwards.
//
//	mode=local   the in-process cache alone.
//	mode=shared  through Redis: the instance is the leader, applying each
//	             transaction to Redis and publishing it on the fan-out stream.
//
// Metrics: changes/s (changes over the rounds' time, from the start of the writes
// to the watermark), gen-ms (the time the server took to run the writes, per
// round) and drain-ms (the time the stream needed after that, per round): which
// side is the bottleneck. stream-changes/s is the stream's own rate while it
// drained: the changes it had not applied when the writes ended (all of a bulk
// round; for small rounds estimated from the WAL between its watermark and the
// target) over drain-ms; it means something when drain-ms is large, i.e. when the
// stream is the bottleneck. ns/op is 0.
func BenchmarkApplyThroughput(b *testing.B) {
	for _, mode := range []string{"local", "shared"} {
		b.Run("mode="+mode, func(b *testing.B) {
			e := newFiguresEnv(b, applyRows)
			db := e.open(b, mode == "shared", 1)[0]
			e.awaitPrecise(b, db)
			gen := e.writer(b)
			b.Run("tx=bulk", func(b *testing.B) {
				e.applyRounds(b, db, gen, applyRows, true, fmt.Sprintf(`DO $$ BEGIN
					UPDATE kv SET v = v + 1 WHERE id BETWEEN 1 AND %d;
					PERFORM set_config('figures.lsn', pg_current_wal_insert_lsn()::text, false);
				END $$`, applyRows))
			})
			b.Run("tx=small", func(b *testing.B) {
				e.applyRounds(b, db, gen, applySmallTxs, false, fmt.Sprintf(`DO $$ BEGIN
					FOR i IN 1..%[1]d LOOP
						UPDATE kv SET v = v + 1 WHERE id = i;
						IF i = %[1]d THEN
							PERFORM set_config('figures.lsn', pg_current_wal_insert_lsn()::text, false);
						END IF;
						COMMIT;
					END LOOP;
				END $$`, applySmallTxs))
			})
		})
	}
}

// awaitPrecise caches a few entries of figuresPointSQL (registering kv's scheme on
// id) and waits until a cached entry survives the change of another row: changes
// of kv give row tags. With Redis, the leader adopts a new scheme only between
// transactions, and entries take kv's wide tag until it has.
func (e *figuresEnv) awaitPrecise(b *testing.B, db *sql.DB) {
	b.Helper()
	ctx := e.ctx
	deadline := time.Now().Add(figuresWait)
	for {
		for id := 1; id <= 3; id++ {
			if _, err := figuresRead(ctx, db, figuresPointSQL, id); err != nil {
				b.Fatal(err)
			}
		}
		v, err := figuresRead(ctx, e.admin, figuresPointSQL, 1)
		if err != nil {
			b.Fatal(err)
		}
		figuresEnsureCached(b, ctx, []*sql.DB{db}, 1, v)
		mustExec(b, e.admin, fmt.Sprintf(`UPDATE kv SET v = v + 1 WHERE id = %d`, applyRows))
		e.figuresWaitApplied(b, db)
		before := figuresStats(b, ctx, db).HitsL1
		if _, err := figuresRead(ctx, db, figuresPointSQL, 1); err != nil {
			b.Fatal(err)
		}
		if figuresStats(b, ctx, db).HitsL1 > before {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("entries of kv still invalidated by changes of other rows after %v", figuresWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// applyRounds runs the DO block do, which makes changes row changes, as the
// iterations and reports the throughput. oneTx says the changes are one
// transaction, none of which can be applied before it commits.
func (e *figuresEnv) applyRounds(b *testing.B, db *sql.DB, gen *pgx.Conn, changes int, oneTx bool, do string) {
	ctx := e.ctx
	lsn := func(query string) cdc.LSN {
		var text string
		if err := gen.QueryRow(ctx, query).Scan(&text); err != nil {
			b.Fatal(err)
		}
		l, err := cdc.ParseLSN(text)
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	var total, generate, drain time.Duration
	var backlog float64 // changes not yet applied when the writes ended
	rounds := 0
	for b.Loop() {
		from := lsn(`SELECT pg_current_wal_insert_lsn()::text`)
		t0 := time.Now()
		// The simple protocol: a DO block that commits must be a statement of its own.
		if _, err := gen.Exec(ctx, do, pgx.QueryExecModeSimpleProtocol); err != nil {
			b.Fatal(err)
		}
		generated := time.Since(t0)
		applied := figuresStats(b, ctx, db).Watermark
		target := lsn(`SELECT current_setting('figures.lsn')`)
		figuresWaitLSN(b, ctx, db, target)
		took := time.Since(t0)
		total += took
		generate += generated
		drain += took - generated
		// The changes are alike, so the WAL not yet applied measures them.
		left := 1.0
		if !oneTx && target > from {
			done := max(cdc.LSN(applied), from)
			left = min(max(float64(target-min(done, target))/float64(target-from), 0), 1)
		}
		backlog += left * float64(changes)
		rounds++
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(changes*rounds)/total.Seconds(), "changes/s")
	b.ReportMetric(figuresMS(generate)/float64(rounds), "gen-ms")
	b.ReportMetric(figuresMS(drain)/float64(rounds), "drain-ms")
	if drain > 0 {
		b.ReportMetric(backlog/drain.Seconds(), "stream-changes/s")
	}
}

// Zipf workload: ids 1..figuresRows with P(id) ∝ id^-zipfS; one update per
// zipfReadsPerUpdate reads.
const (
	zipfS              = 1.1
	zipfReadsPerUpdate = 99
	zipfReaders        = 2
	// zipfWarmup is the number of reads of the workload (with their updates)
	// before the first measurement.
	zipfWarmup = 10_000
	// zipfSlack is how many updates the readers may run ahead of: beyond it they
	// wait for the updater, so that updates stay 1% of the operations.
	zipfSlack = 2
)

// BenchmarkZipfHitRatio measures the hit ratio of a read-mostly workload on a
// 10k-row table: zipfReaders goroutines read Zipf-distributed ids (s = 1.1, v = 1:
// id 1 is a tenth of the reads and ids past 1000 a third) through pgcache, and a
// plain pgx client updates one row, drawn from the same distribution, per 99
// reads (1% of the operations; the readers wait for it when it falls behind).
// Hits are counted from driver.Stats: HitsL1 over hits, misses and bypasses, from
// the measured reads only, after a warm-up: every row read once, then zipfWarmup
// reads of the workload.
//
//	query=precise     SELECT v FROM kv WHERE id = $1: an update evicts that row's
//	                  entry only.
//	query=table-wide  SELECT v FROM kv WHERE id + 0 = $1: no row tags, an update
//	                  evicts every entry of kv.
//
// b.N is the number of reads. Metrics: hit-%, reads/s, updates/s. At the end of
// every run, once the stream has applied every update, a read through pgcache of
// every row updated so far and of 100 others must give what pgx reads: the
// benchmark fails otherwise.
func BenchmarkZipfHitRatio(b *testing.B) {
	e := newFiguresEnv(b, figuresRows)
	db := e.open(b, false, 1)[0]
	updater := e.writer(b)
	for _, q := range []struct{ name, sql string }{{"precise", figuresPointSQL}, {"table-wide", figuresWideSQL}} {
		warm := false
		updated := make(map[int]bool) // the ids updated by every run so far
		b.Run("query="+q.name, func(b *testing.B) {
			b.StopTimer()
			// The warm-up, before the first run only (the function runs again
			// with a larger b.N, on the cache the runs before left): every row
			// read once, then zipfWarmup reads of the workload.
			if !warm {
				for id := 1; id <= figuresRows; id++ {
					if _, err := figuresRead(e.ctx, db, q.sql, id); err != nil {
						b.Fatal(err)
					}
				}
				if _, _, err := zipfWorkload(e.ctx, db, updater, q.sql, zipfWarmup, rand.Uint64(), updated); err != nil {
					b.Fatal(err)
				}
				warm = true
			}
			e.zipfRun(b, db, updater, q.sql, updated)
		})
	}
}

// zipfRun measures b.N reads of the workload (the timer stopped on entry).
func (e *figuresEnv) zipfRun(b *testing.B, db *sql.DB, updater *pgx.Conn, query string, updated map[int]bool) {
	ctx := e.ctx
	before := figuresStats(b, ctx, db)
	b.StartTimer()
	elapsed, updates, err := zipfWorkload(ctx, db, updater, query, int64(b.N), rand.Uint64(), updated)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	after := figuresStats(b, ctx, db)

	hits := after.HitsL1 - before.HitsL1
	other := after.HitsL2 - before.HitsL2 + after.Misses - before.Misses
	var bypassed uint64
	for reason, n := range after.Bypasses {
		if d := n - before.Bypasses[reason]; d > 0 {
			bypassed += d
			b.Logf("%d reads bypassed the cache: %s", d, reason)
		}
	}
	reads := hits + other + bypassed
	if b.N >= 100 && hits+other == 0 {
		b.Fatalf("no read used the cache: %+v", after)
	}
	if reads < uint64(b.N) {
		b.Logf("the stats counted %d reads of %d", reads, b.N)
	}

	// Correctness: once every update is applied, every row updated so far, and
	// others, read through pgcache what pgx reads.
	e.figuresWaitApplied(b, db)
	sample := make([]int, 0, len(updated)+100)
	for id := range updated {
		sample = append(sample, id)
	}
	for range 100 {
		sample = append(sample, rand.IntN(figuresRows)+1)
	}
	for _, id := range sample {
		got, err := figuresRead(ctx, db, query, id)
		if err != nil {
			b.Fatal(err)
		}
		want, err := figuresRead(ctx, e.admin, figuresPointSQL, id)
		if err != nil {
			b.Fatal(err)
		}
		if got != want {
			b.Fatalf("id %d: pgcache read %d, the database has %d (stale)", id, got, want)
		}
	}

	if reads > 0 {
		b.ReportMetric(100*float64(hits)/float64(reads), "hit-%")
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "reads/s")
	b.ReportMetric(float64(updates)/elapsed.Seconds(), "updates/s")
}

// zipfWorkload runs n reads of query through db from zipfReaders goroutines and
// one update by updater per zipfReadsPerUpdate reads done, adds the ids it
// updated to updated, and returns how long it took and how many updates it made.
func zipfWorkload(ctx context.Context, db *sql.DB, updater *pgx.Conn, query string, n int64, seed uint64, updated map[int]bool) (time.Duration, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var firstErr atomic.Pointer[error]
	fail := func(err error) {
		firstErr.CompareAndSwap(nil, &err)
		cancel()
	}
	var next, readsDone, updatesDone atomic.Int64
	due := make(chan struct{}, n/zipfReadsPerUpdate+1) // one per update to make
	start := time.Now()

	var readers sync.WaitGroup
	for g := range zipfReaders {
		readers.Go(func() {
			z := rand.NewZipf(rand.New(rand.NewPCG(seed, uint64(g))), zipfS, 1, figuresRows-1)
			for {
				i := next.Add(1)
				if i > n || ctx.Err() != nil {
					return
				}
				for updatesDone.Load() < (i-1)/zipfReadsPerUpdate-zipfSlack {
					if ctx.Err() != nil {
						return
					}
					time.Sleep(20 * time.Microsecond)
				}
				if _, err := figuresRead(ctx, db, query, int(z.Uint64())+1); err != nil {
					fail(err)
					return
				}
				if readsDone.Add(1)%zipfReadsPerUpdate == 0 {
					due <- struct{}{}
				}
			}
		})
	}
	updaterDone := make(chan struct{})
	go func() {
		defer close(updaterDone)
		z := rand.NewZipf(rand.New(rand.NewPCG(seed, zipfReaders)), zipfS, 1, figuresRows-1)
		for range due {
			if ctx.Err() != nil {
				continue // drain
			}
			id := int(z.Uint64()) + 1
			if _, err := updater.Exec(ctx, `UPDATE kv SET v = v + 1 WHERE id = $1`, id); err != nil {
				fail(err)
				continue
			}
			updated[id] = true
			updatesDone.Add(1)
		}
	}()
	readers.Wait()
	close(due)
	<-updaterDone
	elapsed := time.Since(start)
	if p := firstErr.Load(); p != nil {
		return elapsed, updatesDone.Load(), *p
	}
	return elapsed, updatesDone.Load(), nil
}
