package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	tclog "github.com/testcontainers/testcontainers-go/log"

	_ "github.com/pgcache/pgcache/driver"
	"github.com/pgcache/pgcache/pgcachetest"
)

func init() {
	register("demo", command{
		summary: "start PostgreSQL (or use --dsn) and show pgcache at work",
		run:     runDemo,
	})
}

func runDemo(ctx context.Context, stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	dsn := fs.String("dsn", "", "PostgreSQL to use instead of starting a container (needs CREATE TABLE rights)")
	if err := fs.Parse(args); err != nil {
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{"unexpected arguments"}
	}

	if *dsn == "" {
		fmt.Fprintln(stdout, "starting PostgreSQL in a container (wal_level=logical)...")
		tclog.SetDefault(tclog.NewNoopLogger())
		pg, err := pgcachetest.StartPostgres(ctx)
		if err != nil {
			return err
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = pg.Terminate(ctx)
		}()
		*dsn = pg.URL()
	}

	db, err := sql.Open("pgcache", *dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	fmt.Fprintln(stdout, `connected through sql.Open("pgcache", dsn)`)

	if _, err := db.ExecContext(ctx, `
		DROP TABLE IF EXISTS pgcache_demo_products;
		CREATE TABLE pgcache_demo_products (
			id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL, stock int NOT NULL);
		INSERT INTO pgcache_demo_products
			SELECT i, 'product ' || i, (i % 100) + 0.99, i % 17 FROM generate_series(1, 10000) i`); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "created pgcache_demo_products with 10000 rows")

	const point = "SELECT id, name, price, stock FROM pgcache_demo_products WHERE id = $1"
	show := func(label string) error {
		start := time.Now()
		var id, stock int64
		var name, price string
		if err := db.QueryRowContext(ctx, point, 42).Scan(&id, &name, &price, &stock); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  %-28s id=%d name=%q price=%s stock=%d  (%s)\n", label, id, name, price, stock, time.Since(start).Round(time.Microsecond))
		return nil
	}
	fmt.Fprintln(stdout, "point query:", point)
	for i := 1; i <= 3; i++ {
		if err := show(fmt.Sprintf("read %d", i)); err != nil {
			return err
		}
	}

	// A write from outside the driver, as another service or psql would make it.
	other, err := pgx.Connect(ctx, *dsn)
	if err != nil {
		return err
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(ctx, "UPDATE pgcache_demo_products SET stock = stock + 100 WHERE id = 42"); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "another connection (plain pgx) ran: UPDATE ... SET stock = stock + 100 WHERE id = 42")
	if err := show("read after the update"); err != nil {
		return err
	}

	var count int64
	var avg float64
	start := time.Now()
	if err := db.QueryRowContext(ctx, "SELECT count(*), avg(price)::float8 FROM pgcache_demo_products").Scan(&count, &avg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "aggregate: count=%d avg(price)=%.4f (%s)\n", count, avg, time.Since(start).Round(time.Microsecond))
	_, err = db.ExecContext(ctx, "DROP TABLE pgcache_demo_products")
	return err
}
