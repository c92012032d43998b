package pgcachetest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/pgcachetest"
)

func TestMain(m *testing.M) { os.Exit(pgcachetest.Main(m)) }

func TestSharedPostgresIsLogical(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := pgcachetest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var walLevel, slots string
	if err := conn.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('max_replication_slots')").Scan(&walLevel, &slots); err != nil {
		t.Fatal(err)
	}
	if walLevel != "logical" {
		t.Errorf("wal_level = %q, want logical", walLevel)
	}
	// A slot in the test's database must not keep the database from being dropped.
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('pgcachetest_probe', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
}

func TestSharedRedis(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := pgcachetest.SharedRedis(t).Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Set(ctx, "pgcachetest", "ok", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if got := client.Get(ctx, "pgcachetest").Val(); got != "ok" {
		t.Fatalf("GET = %q", got)
	}
}

func TestRestartKeepsPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if os.Getenv(pgcachetest.EnvDatabaseURL) != "" {
		t.Skip("an external server cannot be restarted")
	}
	pg, err := pgcachetest.StartPostgres(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Terminate(context.Background()) })
	before := pg.URL()
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, before)
	if err != nil {
		t.Fatalf("the URL from before the restart no longer works: %v", err)
	}
	conn.Close(ctx)
}

// TestDirectURL: where containers are reachable at their own addresses, the direct
// URLs reach the same servers as the published ports.
func TestDirectURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := pgcachetest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	direct, err := pg.DirectURL(ctx, dsn)
	if err != nil {
		t.Skipf("no direct address: %v", err)
	}
	if direct == dsn {
		t.Fatalf("DirectURL returned the URL unchanged: %s", direct)
	}
	conn, err := pgx.Connect(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var want, got string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&got); err != nil {
		t.Fatal(err)
	}
	other, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	if err := other.QueryRow(ctx, "SELECT current_database()").Scan(&want); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("direct URL reached database %q, want %q", got, want)
	}

	rd := pgcachetest.SharedRedis(t)
	redisDirect, err := rd.DirectURL(ctx)
	if err != nil {
		t.Fatalf("PostgreSQL is reachable directly but Redis is not: %v", err)
	}
	opts, err := redis.ParseURL(redisDirect)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	defer client.Close()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}
