package integration_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pgcache/pgcache/pgcachetest"
)

// The benchmarks compare pgcache's pass-through with pgx's own database/sql driver
// on the same server and database in the same process: the sub-benchmarks
// driver=pgx and driver=pgcache differ in the driver only, so benchstat can
// compare them. driver=pgcache runs with pgcache_mode=off: what every statement
// that is not cached pays (the cached path is BenchmarkCache's).
//
// -count runs each sub-benchmark's rounds back to back; to interleave the two
// drivers (so drift on a shared machine hits both alike), run one process per round:
//
//	go test -c -o /tmp/integration.test ./integration
//	for i in $(seq 10); do
//		/tmp/integration.test -test.run '^$' -test.bench . -test.count 1
//	done | tee bench.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /driver bench.txt

// benchRows is the size of the benchmark table.
const benchRows = 10_000

// benchItem is one row of the benchmark table: five columns of common types.
type benchItem struct {
	ID      int64
	Name    string
	Qty     int32
	Price   float64
	Created time.Time
}

// benchDrivers creates a database with the benchmark table and opens it through
// each driver, pgx first.
func benchDrivers(b *testing.B) []target {
	b.Helper()
	dsn := pgcachetest.SharedPostgres(b).NewDatabase(b)
	targets := []target{{"pgx", openDB(b, "pgx", dsn)}, {"pgcache", openDB(b, "pgcache", withParams(dsn, "pgcache_mode=off"))}}
	mustExec(b, targets[0].db,
		`CREATE TABLE bench_items (
			id      bigint PRIMARY KEY,
			name    text NOT NULL,
			qty     int NOT NULL,
			price   float8 NOT NULL,
			created timestamptz NOT NULL
		)`,
		fmt.Sprintf(`INSERT INTO bench_items
			SELECT g, 'item ' || g, g %% 100, g * 0.25, '2024-01-01'::timestamptz + g * interval '1 minute'
			FROM generate_series(1, %d) g`, benchRows),
		`VACUUM ANALYZE bench_items`,
	)
	return targets
}

func scanBenchItem(s interface{ Scan(...any) error }, it *benchItem) error {
	return s.Scan(&it.ID, &it.Name, &it.Qty, &it.Price, &it.Created)
}

// pointQuery reads row i (1-based, wrapping) by primary key.
func pointQuery(ctx context.Context, db *sql.DB, i int64) error {
	id := i%benchRows + 1
	var it benchItem
	err := scanBenchItem(db.QueryRowContext(ctx, `SELECT id, name, qty, price, created FROM bench_items WHERE id = $1`, id), &it)
	if err == nil && it.ID != id {
		err = fmt.Errorf("read row %d, want %d", it.ID, id)
	}
	return err
}

// rows100Query reads the i-th (wrapping) range of 100 rows by primary key.
func rows100Query(ctx context.Context, db *sql.DB, i int64) error {
	first := i*100%(benchRows-100) + 1
	rows, err := db.QueryContext(ctx, `SELECT id, name, qty, price, created FROM bench_items WHERE id BETWEEN $1 AND $2 ORDER BY id`, first, first+99)
	if err != nil {
		return err
	}
	defer rows.Close()
	n := 0
	var it benchItem
	for rows.Next() {
		if err := scanBenchItem(rows, &it); err != nil {
			return err
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n != 100 {
		return fmt.Errorf("read %d rows, want 100", n)
	}
	return nil
}

var benchQueries = []struct {
	name string
	run  func(ctx context.Context, db *sql.DB, i int64) error
}{
	{"point", pointQuery},
	{"rows100", rows100Query},
}

// benchDriver runs one query through one driver.
func benchDriver(b *testing.B, db *sql.DB, query func(context.Context, *sql.DB, int64) error) {
	ctx := context.Background()
	// Warm the connection and pgx's statement cache outside the timing.
	if err := query(ctx, db, 0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		i++
		if err := query(ctx, db, i); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPointQuery reads one row of five columns by primary key.
func BenchmarkPointQuery(b *testing.B) {
	for _, tg := range benchDrivers(b) {
		b.Run("driver="+tg.name, func(b *testing.B) { benchDriver(b, tg.db, pointQuery) })
	}
}

// BenchmarkRows100 reads 100 rows of five columns by a primary key range.
func BenchmarkRows100(b *testing.B) {
	for _, tg := range benchDrivers(b) {
		b.Run("driver="+tg.name, func(b *testing.B) { benchDriver(b, tg.db, rows100Query) })
	}
}

// BenchmarkPaired measures the ratio where the machine is shared and busy: each
// iteration runs the query once through each driver, first one then the other, so
// load changes hit both alike. It reports the median time of each driver's queries
// and pgcache/pgx, the ratio of the medians (1.03 is 3% overhead); ns/op covers
// both queries.
func BenchmarkPaired(b *testing.B) {
	targets := benchDrivers(b)
	pgxDB, pgcacheDB := targets[0].db, targets[1].db
	for _, q := range benchQueries {
		b.Run("query="+q.name, func(b *testing.B) {
			ctx := context.Background()
			for _, db := range []*sql.DB{pgxDB, pgcacheDB} {
				if err := q.run(ctx, db, 0); err != nil {
					b.Fatal(err)
				}
			}
			var pgxTimes, pgcacheTimes []time.Duration
			timed := func(db *sql.DB, i int64, into *[]time.Duration) {
				start := time.Now()
				if err := q.run(ctx, db, i); err != nil {
					b.Fatal(err)
				}
				*into = append(*into, time.Since(start))
			}
			var i int64
			for b.Loop() {
				i++
				if i%2 == 0 {
					timed(pgxDB, i, &pgxTimes)
					timed(pgcacheDB, i, &pgcacheTimes)
				} else {
					timed(pgcacheDB, i, &pgcacheTimes)
					timed(pgxDB, i, &pgxTimes)
				}
			}
			pgx, pgcache := median(pgxTimes), median(pgcacheTimes)
			b.ReportMetric(float64(pgx.Nanoseconds()), "pgx-ns/query")
			b.ReportMetric(float64(pgcache.Nanoseconds()), "pgcache-ns/query")
			b.ReportMetric(float64(pgcache)/float64(pgx), "pgcache/pgx")
		})
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
