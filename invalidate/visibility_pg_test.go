package invalidate_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/invalidate"
	"github.com/pgcache/pgcache/pgcachetest"
)

// TestPgVisibility: against the real server, a transaction is not visible while it
// runs and is once it has committed.
func TestPgVisibility(t *testing.T) {
	ctx := context.Background()
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	v := invalidate.NewPgVisibility(cfg)
	defer v.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var xid uint64
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	check := func(want bool) {
		t.Helper()
		got, err := v.Visible(ctx, []uint32{uint32(xid)})
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != want {
			t.Fatalf("transaction %d: visible %v, want %v", xid, got[0], want)
		}
	}
	check(false)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	check(true)
}
