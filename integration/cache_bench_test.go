package integration_test

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration/internal/nopdriver"
	"github.com/pgcache/pgcache/pgcachetest"
)

// BenchmarkCache measures the cached read path against pgx's own driver on the same
// server, in one process and one run, and logs the ratios the project targets:
//
//	query=point: one row of five columns by primary key.
//	  driver=paired runs every driver in each iteration (blocks of pairedBlock
//	  reads of nop and L1, one of L2 and pgx, in alternating order) so that load
//	  changes on a shared machine hit all alike, and reports the ratios of the
//	  median latencies: the figures to quote on a busy machine.
//	  driver=nop        database/sql over a driver returning the same row canned:
//	                    the floor any database/sql driver pays
//	  driver=pgcache-L1 an in-process hit (target: ≤ 1.3× nop, ≥ 40× faster than pgx)
//	  driver=pgcache-L2 a Redis hit, the in-process cache too small to hold anything
//	                    (target: ≥ 1.5× faster than pgx)
//	  driver=pgx        PostgreSQL
//	query=aggregate: count, sum, avg, min and max over the 100k-row table.
//	  driver=pgcache-L2 vs driver=pgx (target: ≥ 300× faster); paired as above
//	query=miss: the point query with a new key every time (an argument that does not
//	  change the row): every pgcache read misses, runs the query and fills the cache.
//	  driver=pgcache vs driver=pgx (target: ≤ 5% slower); paired runs both
//	  alternately and reports the ratio of the median latencies.
//	query=point-parallel: the point query from GOMAXPROCS goroutines; ops/s.
//
// Servers are reached at their containers' own addresses where possible, which
// skips Docker's port proxy (tens of µs per round trip, which would flatter the
// ratios). Run, for example:
//
//	go test -run '^$' -bench 'BenchmarkCache' -count 6 ./integration | tee cache.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /driver cache.txt
func BenchmarkCache(b *testing.B) {
	env := newCacheBench(b)
	results := make(map[string]float64) // ns/op of each sub-benchmark's last run
	record := func(name string, fn func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			fn(b)
			results[name] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		})
	}
	ctx := context.Background()
	pointKeys := func(i int64) int64 { return i%benchWarmKeys + 1 }

	record("query=point/driver=nop", func(b *testing.B) {
		benchLoop(b, func(i int64) error { return pointRead(ctx, env.nop, pointKeys(i), false) })
	})
	record("query=point/driver=pgcache-L1", func(b *testing.B) {
		env.expect(b, env.l1, "HitsL1", func(i int64) error { return pointRead(ctx, env.l1, pointKeys(i), true) })
	})
	record("query=point/driver=pgcache-L2", func(b *testing.B) {
		env.expect(b, env.l2, "HitsL2", func(i int64) error { return pointRead(ctx, env.l2, pointKeys(i), true) })
	})
	record("query=point/driver=pgx", func(b *testing.B) {
		benchLoop(b, func(i int64) error { return pointRead(ctx, env.pgx, pointKeys(i), true) })
	})
	b.Run("query=point/driver=paired", func(b *testing.B) { env.pairedPoint(b) })
	record("query=aggregate/driver=pgcache-L2", func(b *testing.B) {
		env.expect(b, env.l2, "HitsL2", func(int64) error { return aggregateRead(ctx, env.l2) })
	})
	record("query=aggregate/driver=pgx", func(b *testing.B) {
		benchLoop(b, func(int64) error { return aggregateRead(ctx, env.pgx) })
	})
	b.Run("query=aggregate/driver=paired", func(b *testing.B) { env.pairedAggregate(b) })
	record("query=miss/driver=pgcache", func(b *testing.B) {
		env.expect(b, env.l1, "Misses", func(i int64) error { return missRead(ctx, env.l1, i) })
	})
	record("query=miss/driver=pgx", func(b *testing.B) {
		benchLoop(b, func(i int64) error { return missRead(ctx, env.pgx, i) })
	})
	b.Run("query=miss/driver=paired", func(b *testing.B) { env.pairedMiss(b) })
	for _, d := range []struct {
		name string
		db   *sql.DB
	}{{"nop", env.nop}, {"pgcache-L1", env.l1}, {"pgx", env.pgx}} {
		b.Run("query=point-parallel/driver="+d.name, func(b *testing.B) {
			b.ReportAllocs()
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := pointRead(ctx, d.db, pointKeys(next.Add(1)), d.db != env.nop); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}

	ratio := func(slow, fast string) string {
		s, f := results[slow], results[fast]
		if s == 0 || f == 0 {
			return "not run"
		}
		return fmt.Sprintf("%.2f", s/f)
	}
	b.Logf("pgx/L1 point (target ≥ 40): %s", ratio("query=point/driver=pgx", "query=point/driver=pgcache-L1"))
	b.Logf("L1/nop point (target ≤ 1.3): %s", ratio("query=point/driver=pgcache-L1", "query=point/driver=nop"))
	b.Logf("pgx/L2 point (target ≥ 1.5): %s", ratio("query=point/driver=pgx", "query=point/driver=pgcache-L2"))
	b.Logf("pgx/L2 aggregate (target ≥ 300): %s", ratio("query=aggregate/driver=pgx", "query=aggregate/driver=pgcache-L2"))
	b.Logf("miss pgcache/pgx (target ≤ 1.05): %s", ratio("query=miss/driver=pgcache", "query=miss/driver=pgx"))
}

// Benchmark data: benchAggRows rows, of which the first benchWarmKeys are read by
// the point benchmarks (and cached before they run).
const (
	benchAggRows  = 100_000
	benchWarmKeys = 1000
)

const (
	benchPointSQL = `SELECT id, name, qty, price, created FROM bench_cache WHERE id = $1`
	// benchMissSQL reads the same row as benchPointSQL for any $2 > 0: a new $2 is
	// a new key.
	benchMissSQL = `SELECT id, name, qty, price, created FROM bench_cache WHERE id = $1 AND $2::bigint > 0`
	benchAggSQL  = `SELECT count(*), sum(qty), avg(price), min(created), max(created) FROM bench_cache`
)

// cacheBench is the benchmark's database through each driver.
type cacheBench struct {
	pgx *sql.DB // pgx's stdlib driver
	l1  *sql.DB // pgcache, in-process cache only
	l2  *sql.DB // pgcache with Redis, the in-process cache too small to hold an entry
	nop *sql.DB // nopdriver returning a canned row
}

// directDatabase creates a database for a benchmark and returns its URL at the
// PostgreSQL container's own address where it can: Docker's port proxy adds tens
// of µs to every round trip, which would flatter the ratios.
func directDatabase(b *testing.B, ctx context.Context) string {
	b.Helper()
	pg := pgcachetest.SharedPostgres(b)
	dsn := pg.NewDatabase(b)
	direct, err := pg.DirectURL(ctx, dsn)
	if err != nil {
		b.Logf("PostgreSQL through its published port: %v", err)
		return dsn
	}
	return direct
}

// directRedisURL is the shared Redis's URL at its container's own address where
// it can (see directDatabase).
func directRedisURL(b *testing.B, ctx context.Context) string {
	b.Helper()
	rd := pgcachetest.SharedRedis(b)
	direct, err := rd.DirectURL(ctx)
	if err != nil {
		b.Logf("Redis through its published port: %v", err)
		return rd.URL()
	}
	return direct
}

func newCacheBench(b *testing.B) *cacheBench {
	b.Helper()
	ctx := testContext(b)
	dsn := directDatabase(b, ctx)
	redisURL := redisURLWithDB(b, directRedisURL(b, ctx), benchRedisDB)

	admin := openDB(b, "pgx", dsn)
	mustExec(b, admin,
		`CREATE TABLE bench_cache (
			id      bigint PRIMARY KEY,
			name    text NOT NULL,
			qty     int NOT NULL,
			price   float8 NOT NULL,
			created timestamptz NOT NULL
		)`,
		fmt.Sprintf(`INSERT INTO bench_cache
			SELECT g, 'item ' || g, g %% 100, g * 0.25, '2024-01-01'::timestamptz + g * interval '1 minute'
			FROM generate_series(1, %d) g`, benchAggRows),
		`VACUUM ANALYZE bench_cache`,
	)
	env := &cacheBench{
		pgx: openDB(b, "pgx", dsn),
		l1:  openDB(b, "pgcache", withParams(dsn, steadyLag)),
		l2:  openDB(b, "pgcache", withParams(withRedis(dsn, redisURL), steadyLag, "pgcache_l1_bytes=1")),
	}
	waitAllStreaming(b, admin, env.l1, env.l2)

	// The nop driver's canned row is the row pgx returns, as driver values.
	var canned []sqldriver.Value
	conn, err := env.pgx.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, benchPointSQL, 1)
	if err != nil {
		b.Fatal(err)
	}
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if !rows.Next() {
		b.Fatal("no row 1")
	}
	if err := rows.Scan(ptrs...); err != nil {
		b.Fatal(err)
	}
	rows.Close()
	for _, v := range vals {
		canned = append(canned, v)
	}
	env.nop = sql.OpenDB(&nopdriver.Connector{Columns: cols, Rows: [][]sqldriver.Value{canned}})
	b.Cleanup(func() { env.nop.Close() })

	// Warm both caches with the point keys and the aggregate; Redis is filled
	// through a queue.
	for id := int64(1); id <= benchWarmKeys; id++ {
		for _, db := range []*sql.DB{env.l1, env.l2} {
			if err := pointRead(ctx, db, id, true); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := aggregateRead(ctx, env.l2); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for dbStats(b, env.l2).FillsL2 < benchWarmKeys+1 {
		if time.Now().After(deadline) {
			b.Fatalf("Redis not filled: %+v", dbStats(b, env.l2).Stats)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return env
}

// benchLoop times read, called with 0, 1, 2...
func benchLoop(b *testing.B, read func(i int64) error) {
	b.Helper()
	if err := read(0); err != nil { // warm the connection
		b.Fatal(err)
	}
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		i++
		if err := read(i); err != nil {
			b.Fatal(err)
		}
	}
}

// expect is benchLoop for pgcache, checking that the timed reads were counted in
// the named counter of db's Stats (HitsL1, HitsL2 or Misses): the benchmark
// measured the path it names.
func (env *cacheBench) expect(b *testing.B, db *sql.DB, counter string, read func(i int64) error) {
	b.Helper()
	get := func() uint64 {
		st := dbStats(b, db)
		switch counter {
		case "HitsL1":
			return st.HitsL1
		case "HitsL2":
			return st.HitsL2
		case "Misses":
			return st.Misses
		}
		b.Fatalf("unknown counter %s", counter)
		return 0
	}
	before := get()
	benchLoop(b, read)
	// Redis reads that time out (a busy machine) are misses: allow a few.
	if n := get() - before; n < uint64(b.N)-uint64(b.N)/100 {
		b.Fatalf("%d of %d reads counted in %s: the benchmark did not measure what it says; %+v",
			n, b.N, counter, dbStats(b, db).Stats)
	} else if n < uint64(b.N) {
		b.Logf("%d of %d reads counted in %s; %+v", n, b.N, counter, dbStats(b, db).Stats)
	}
}

// pointRead reads row id by primary key; check says whether the row must be id.
func pointRead(ctx context.Context, db *sql.DB, id int64, check bool) error {
	var it benchItem
	err := scanBenchItem(db.QueryRowContext(ctx, benchPointSQL, id), &it)
	if err == nil && check && it.ID != id {
		err = fmt.Errorf("read row %d, want %d", it.ID, id)
	}
	return err
}

// missKeys makes the key of every miss read new, in this process.
var missKeys atomic.Int64

// missRead reads a row with a key never used before.
func missRead(ctx context.Context, db *sql.DB, i int64) error {
	id := i%benchAggRows + 1
	var it benchItem
	err := scanBenchItem(db.QueryRowContext(ctx, benchMissSQL, id, missKeys.Add(1)), &it)
	if err == nil && it.ID != id {
		err = fmt.Errorf("read row %d, want %d", it.ID, id)
	}
	return err
}

func aggregateRead(ctx context.Context, db *sql.DB) error {
	var n, sum int64
	var avg float64
	var first, last time.Time
	if err := db.QueryRowContext(ctx, benchAggSQL).Scan(&n, &sum, &avg, &first, &last); err != nil {
		return err
	}
	if n != benchAggRows {
		return fmt.Errorf("count %d, want %d", n, benchAggRows)
	}
	return nil
}

// pairedMiss runs a miss through pgx and through pgcache in every iteration, in
// alternating order, so that load changes on a shared machine hit both alike, and
// reports the median latency of each and their ratio.
func (env *cacheBench) pairedMiss(b *testing.B) {
	ctx := context.Background()
	for _, db := range []*sql.DB{env.pgx, env.l1} {
		if err := missRead(ctx, db, 0); err != nil {
			b.Fatal(err)
		}
	}
	var pgxTimes, pgcacheTimes []time.Duration
	timed := func(db *sql.DB, i int64, into *[]time.Duration) {
		start := time.Now()
		if err := missRead(ctx, db, i); err != nil {
			b.Fatal(err)
		}
		*into = append(*into, time.Since(start))
	}
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		i++
		if i%2 == 0 {
			timed(env.pgx, i, &pgxTimes)
			timed(env.l1, i, &pgcacheTimes)
		} else {
			timed(env.l1, i, &pgcacheTimes)
			timed(env.pgx, i, &pgxTimes)
		}
	}
	pgx, pgcache := median(pgxTimes), median(pgcacheTimes)
	b.ReportMetric(float64(pgx.Nanoseconds()), "pgx-ns/query")
	b.ReportMetric(float64(pgcache.Nanoseconds()), "pgcache-ns/query")
	b.ReportMetric(float64(pgcache)/float64(pgx), "pgcache/pgx")
}

// pairedBlock is how many of the microsecond-scale reads (nop, L1) pairedPoint
// times together, so that reading the clock does not weigh on them.
const pairedBlock = 64

// pairedPoint runs the point query through every driver in each iteration and
// reports each one's median latency and the ratios the project targets.
func (env *cacheBench) pairedPoint(b *testing.B) {
	ctx := context.Background()
	type timedDriver struct {
		name  string
		db    *sql.DB
		block int
		check bool
		times []time.Duration
	}
	drivers := []*timedDriver{
		{name: "nop", db: env.nop, block: pairedBlock},
		{name: "L1", db: env.l1, block: pairedBlock, check: true},
		{name: "L2", db: env.l2, block: 1, check: true},
		{name: "pgx", db: env.pgx, block: 1, check: true},
	}
	for _, d := range drivers {
		if err := pointRead(ctx, d.db, 1, d.check); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		i++
		for k := range drivers {
			d := drivers[k]
			if i%2 == 0 {
				d = drivers[len(drivers)-1-k]
			}
			start := time.Now()
			for j := range d.block {
				if err := pointRead(ctx, d.db, (i*pairedBlock+int64(j))%benchWarmKeys+1, d.check); err != nil {
					b.Fatal(err)
				}
			}
			d.times = append(d.times, time.Since(start)/time.Duration(d.block))
		}
	}
	med := make(map[string]float64)
	for _, d := range drivers {
		med[d.name] = float64(median(d.times))
		b.ReportMetric(med[d.name], d.name+"-ns/query")
	}
	b.ReportMetric(med["pgx"]/med["L1"], "pgx/L1")
	b.ReportMetric(med["L1"]/med["nop"], "L1/nop")
	b.ReportMetric(med["pgx"]/med["L2"], "pgx/L2")
}

// pairedAggregate runs the aggregate through pgx and from Redis in each
// iteration, in alternating order, and reports the ratio of the medians.
func (env *cacheBench) pairedAggregate(b *testing.B) {
	ctx := context.Background()
	var pgxTimes, l2Times []time.Duration
	timed := func(db *sql.DB, into *[]time.Duration) {
		start := time.Now()
		if err := aggregateRead(ctx, db); err != nil {
			b.Fatal(err)
		}
		*into = append(*into, time.Since(start))
	}
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		i++
		if i%2 == 0 {
			timed(env.pgx, &pgxTimes)
			timed(env.l2, &l2Times)
		} else {
			timed(env.l2, &l2Times)
			timed(env.pgx, &pgxTimes)
		}
	}
	pgx, l2 := median(pgxTimes), median(l2Times)
	b.ReportMetric(float64(pgx.Nanoseconds()), "pgx-ns/query")
	b.ReportMetric(float64(l2.Nanoseconds()), "L2-ns/query")
	b.ReportMetric(float64(pgx)/float64(l2), "pgx/L2")
}
