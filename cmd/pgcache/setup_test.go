package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/pgcache/pgcache/pgcachetest"
)

func TestMain(m *testing.M) { os.Exit(pgcachetest.Main(m)) }

// TestSetup: --check reports what is missing and changes nothing; setup creates the
// publication and the DDL triggers; a second check finds everything in place.
func TestSetup(t *testing.T) {
	ctx := context.Background()
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	setup := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, append([]string{"setup", "--dsn", dsn, "--publication", "setup_test"}, args...), &out, &errOut)
		return code, out.String() + errOut.String()
	}
	code, out := setup("--check")
	if code != 1 || !strings.Contains(out, "FIX  publication setup_test is missing") || !strings.Contains(out, "FIX  DDL event triggers missing") {
		t.Fatalf("check before setup: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "ok   wal_level = logical") {
		t.Errorf("wal_level not reported ok:\n%s", out)
	}
	if code, out = setup(); code != 0 || !strings.Contains(out, "created publication setup_test FOR ALL TABLES") ||
		!strings.Contains(out, "installed the DDL event triggers") {
		t.Fatalf("setup: exit %d\n%s", code, out)
	}
	if code, out = setup("--check"); code != 0 || strings.Contains(out, "FIX") {
		t.Fatalf("check after setup: exit %d\n%s", code, out)
	}
}
