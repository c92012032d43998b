package integration_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/pgcache/pgcache/pgcachetest"
)

// The benchmarks compare pgcache with pgx's own database/sql driver on the same
// server and database in the same process: the sub-benchmarks driver=pgx and
// driver=pgcache differ in the driver only, so benchstat can compare them.
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
	targets := []target{{"pgx", openDB(b, "pgx", dsn)}, {"pgcache", openDB(b, "pgcache", dsn)}}
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

// BenchmarkPointQuery reads one row of five columns by primary key.
func BenchmarkPointQuery(b *testing.B) {
	for _, tg := range benchDrivers(b) {
		b.Run("driver="+tg.name, func(b *testing.B) {
			ctx := context.Background()
			const query = `SELECT id, name, qty, price, created FROM bench_items WHERE id = $1`
			var it benchItem
			// Warm the connection and pgx's statement cache outside the timing.
			if err := scanBenchItem(tg.db.QueryRowContext(ctx, query, 1), &it); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			var id int64
			for b.Loop() {
				id = id%benchRows + 1
				if err := scanBenchItem(tg.db.QueryRowContext(ctx, query, id), &it); err != nil {
					b.Fatal(err)
				}
			}
			if it.ID != id {
				b.Fatalf("read row %d, want %d", it.ID, id)
			}
		})
	}
}

// BenchmarkRows100 reads 100 rows of five columns by a primary key range.
func BenchmarkRows100(b *testing.B) {
	for _, tg := range benchDrivers(b) {
		b.Run("driver="+tg.name, func(b *testing.B) {
			ctx := context.Background()
			const query = `SELECT id, name, qty, price, created FROM bench_items WHERE id BETWEEN $1 AND $2 ORDER BY id`
			read := func(db *sql.DB, first int64) (int, error) {
				rows, err := db.QueryContext(ctx, query, first, first+99)
				if err != nil {
					return 0, err
				}
				defer rows.Close()
				n := 0
				var it benchItem
				for rows.Next() {
					if err := scanBenchItem(rows, &it); err != nil {
						return n, err
					}
					n++
				}
				return n, rows.Err()
			}
			if _, err := read(tg.db, 1); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			var first int64
			for b.Loop() {
				first = (first+100)%(benchRows-100) + 1
				n, err := read(tg.db, first)
				if err != nil {
					b.Fatal(err)
				}
				if n != 100 {
					b.Fatalf("read %d rows, want 100", n)
				}
			}
		})
	}
}
