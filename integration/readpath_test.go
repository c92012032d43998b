package integration_test

import (
	"database/sql"
	"testing"
	"time"
)

// waitAllStreaming starts the change streams of dbs and waits until each streams
// with its cache in use. A stream that starts after the database's last commit
// has no watermark until something commits, so it commits into a table of its
// own until every stream has applied one.
func waitAllStreaming(t *testing.T, admin *sql.DB, dbs ...*sql.DB) {
	t.Helper()
	ctx := testContext(t)
	for _, db := range dbs {
		if err := db.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mustExec(t, admin, `CREATE TABLE IF NOT EXISTS stream_tick (n int)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mustExec(t, admin, `INSERT INTO stream_tick VALUES (1)`)
		ready := true
		for _, db := range dbs {
			st := stats(t, db)
			if st.StreamProblem != "" {
				t.Fatalf("change stream: %s", st.StreamProblem)
			}
			ready = ready && st.Usable && st.Watermark > 0
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("change streams not streaming after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
