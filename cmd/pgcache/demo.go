package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	tclog "github.com/testcontainers/testcontainers-go/log"

	"github.com/pgcache/pgcache/driver"
	"github.com/pgcache/pgcache/pgcachetest"
)

func init() {
	register("demo", command{
		summary: "start PostgreSQL and Redis (or use --dsn/--redis) and show pgcache at work",
		run:     runDemo,
	})
}

func runDemo(ctx context.Context, stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	dsn := fs.String("dsn", "", "PostgreSQL to use instead of a container (superuser, wal_level=logical)")
	redisURL := fs.String("redis", "", "Redis to use instead of a container")
	if err := fs.Parse(args); err != nil {
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{"unexpected arguments"}
	}
	tclog.SetDefault(tclog.NewNoopLogger())
	stopAll := func() {}
	defer func() { stopAll() }()
	if *dsn == "" {
		fmt.Fprintln(stdout, "starting PostgreSQL (wal_level=logical) in a container...")
		// Durable commits, as in production: the test servers' asynchronous
		// commits reach logical decoding only when the WAL writer flushes them
		// (up to 200 ms later), which would show as read-your-writes bypasses.
		pg, err := pgcachetest.StartPostgres(ctx, "synchronous_commit=on")
		if err != nil {
			return err
		}
		prev := stopAll
		stopAll = func() { prev(); terminate(pg.Terminate) }
		*dsn = pg.URL()
	}
	if *redisURL == "" {
		fmt.Fprintln(stdout, "starting Redis in a container...")
		rd, err := pgcachetest.StartRedis(ctx)
		if err != nil {
			return err
		}
		prev := stopAll
		stopAll = func() { prev(); terminate(rd.Terminate) }
		*redisURL = rd.URL()
	}

	admin, err := pgx.Connect(ctx, *dsn)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `
		DROP TABLE IF EXISTS demo_products;
		CREATE TABLE demo_products (
			id bigint PRIMARY KEY, name text NOT NULL, category int NOT NULL,
			price numeric(10,2) NOT NULL, stock int NOT NULL);
		INSERT INTO demo_products
			SELECT i, 'product ' || i, i % 20, (i % 100) + 0.99, i % 17 FROM generate_series(1, 100000) i`); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "created demo_products: 100,000 rows")

	shared := withParam(*dsn, "pgcache_redis", *redisURL)
	db, err := sql.Open("pgcache", shared)
	if err != nil {
		return err
	}
	defer db.Close()
	fmt.Fprintln(stdout, `opened instance A: sql.Open("pgcache", dsn+"&pgcache_redis=...")`)
	if err := waitUsable(ctx, db); err != nil {
		return err
	}
	st, _ := driver.StatsOf(ctx, db)
	fmt.Fprintf(stdout, "instance A's cache is live: change stream %s\n\n", st.Stream)

	const point = "SELECT id, name, category, price, stock FROM demo_products WHERE id = $1"
	show := func(db *sql.DB, label string) error {
		before, _ := driver.StatsOf(ctx, db)
		start := time.Now()
		var id, category, stock int64
		var name, price string
		if err := db.QueryRowContext(ctx, point, 42).Scan(&id, &name, &category, &price, &stock); err != nil {
			return err
		}
		took := time.Since(start)
		after, _ := driver.StatsOf(ctx, db)
		fmt.Fprintf(stdout, "  %-34s stock=%-4d %-13s %9s\n", label, stock, outcome(before, after), took.Round(time.Microsecond))
		return nil
	}
	fmt.Fprintln(stdout, "point query:", point, "(id = 42)")
	for i := 1; i <= 3; i++ {
		if err := show(db, fmt.Sprintf("A: read %d", i)); err != nil {
			return err
		}
	}

	fmt.Fprintln(stdout, "\nanother client (plain pgx, not pgcache) runs: UPDATE demo_products SET stock = stock + 100 WHERE id = 42")
	if _, err := admin.Exec(ctx, "UPDATE demo_products SET stock = stock + 100 WHERE id = 42"); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond) // the change stream evicts the entry within milliseconds
	for i := 1; i <= 2; i++ {
		if err := show(db, fmt.Sprintf("A: read %d after the update", i)); err != nil {
			return err
		}
	}

	fmt.Fprintln(stdout, "\ninstance A itself runs: UPDATE demo_products SET stock = 7 WHERE id = 42, and reads at once")
	if _, err := db.ExecContext(ctx, "UPDATE demo_products SET stock = 7 WHERE id = 42"); err != nil {
		return err
	}
	if err := show(db, "A: read right after its write"); err != nil {
		return err
	}

	fmt.Fprintln(stdout, "\na second application instance B shares the cache through Redis")
	dbB, err := sql.Open("pgcache", shared)
	if err != nil {
		return err
	}
	defer dbB.Close()
	if err := waitUsable(ctx, dbB); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond)
	if err := show(db, "A: read (fills Redis)"); err != nil {
		return err
	}
	time.Sleep(100 * time.Millisecond)
	for i := 1; i <= 2; i++ {
		if err := show(dbB, fmt.Sprintf("B: read %d", i)); err != nil {
			return err
		}
	}

	const agg = "SELECT category, count(*), sum(stock) FROM demo_products GROUP BY category ORDER BY category"
	fmt.Fprintln(stdout, "\naggregate over 100,000 rows:", agg)
	for i := 1; i <= 3; i++ {
		before, _ := driver.StatsOf(ctx, db)
		start := time.Now()
		rows, err := db.QueryContext(ctx, agg)
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Close(); err != nil {
			return err
		}
		after, _ := driver.StatsOf(ctx, db)
		fmt.Fprintf(stdout, "  %-34s rows=%-5d %-13s %9s\n", fmt.Sprintf("A: run %d", i), n, outcome(before, after), time.Since(start).Round(time.Microsecond))
	}

	st, _ = driver.StatsOf(ctx, db)
	fmt.Fprintf(stdout, "\ninstance A: %d L1 hits, %d Redis hits, %d misses, bypasses %v; stream %s\n",
		st.HitsL1, st.HitsL2, st.Misses, st.Bypasses, st.Stream)
	_, err = admin.Exec(ctx, "DROP TABLE demo_products")
	return err
}

// outcome says how a read was answered, from the stats before and after it.
func outcome(before, after driver.Stats) string {
	switch {
	case after.HitsL1 > before.HitsL1:
		return "hit (memory)"
	case after.HitsL2 > before.HitsL2:
		return "hit (Redis)"
	case after.Misses > before.Misses:
		return "miss"
	}
	for reason, n := range after.Bypasses {
		if n > before.Bypasses[reason] {
			return "bypass: " + reason
		}
	}
	return "database"
}

func waitUsable(ctx context.Context, db *sql.DB) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		st, err := driver.StatsOf(ctx, db)
		if err != nil {
			return err
		}
		if st.StreamProblem != "" {
			return fmt.Errorf("the change stream cannot run: %s", st.StreamProblem)
		}
		if st.Usable {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the cache did not become usable: %s", st.UnusableReason)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// withParam adds a query parameter to a URL DSN, or a keyword to a keyword/value one.
func withParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		sep := "?"
		if strings.Contains(dsn, "?") {
			sep = "&"
		}
		return dsn + sep + key + "=" + url.QueryEscape(value)
	}
	return dsn + " " + key + "='" + strings.ReplaceAll(value, "'", `\'`) + "'"
}

func terminate(f func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = f(ctx)
}
