package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/pgcachetest"
)

// delivered counts the row changes received per id, and those with a
// negative id (written by transactions that rolled back).
func delivered(rec *recorder) (counts map[int]int, rolledBack int) {
	counts = make(map[int]int)
	for _, r := range rec.rows() {
		id, _ := strconv.Atoi(value(r, "id").Text)
		if id < 0 {
			rolledBack++
		}
		counts[id]++
	}
	return counts, rolledBack
}

// allDelivered reports whether ids 1..n were all received.
func allDelivered(rec *recorder, n int) bool {
	counts, _ := delivered(rec)
	for i := 1; i <= n; i++ {
		if counts[i] == 0 {
			return false
		}
	}
	return true
}

// write commits ids from..to, one transaction each, and a rolled-back
// transaction (with the id negated) before every tenth.
func write(t testing.TB, conn *pgx.Conn, from, to int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i <= to; i++ {
		if i%10 == 0 {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", -i); err != nil {
				t.Error(err)
				return
			}
			_ = tx.Rollback(ctx)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1)", i); err != nil {
			t.Errorf("insert %d: %v", i, err)
			return
		}
	}
}

// TestWalsenderKilledWhileWriting cuts the replication connection again and
// again while a writer commits, and counts: every committed row arrives, no
// rolled-back one does.
func TestWalsenderKilledWhileWriting(t *testing.T) {
	const n = 3000
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY)")
	rec := &recorder{}
	cfg := testConfig(t, dsn)
	// A consumer that also fails now and then: its transactions come again.
	var calls, failed atomic.Int64
	rec.onApply = func(context.Context, *cdc.Transaction) error {
		if calls.Add(1)%300 == 0 {
			failed.Add(1)
			return errors.New("injected consumer failure")
		}
		return nil
	}
	r := streaming(t, cfg, rec)

	writer := connect(t, dsn)
	done := make(chan struct{})
	go func() {
		defer close(done)
		write(t, writer, 1, n)
	}()
	kills := 0
	for writing := true; writing; {
		select {
		case <-done:
			writing = false
		case <-time.After(150 * time.Millisecond):
			if terminateWalsender(t, db, cfg.Slot) {
				kills++
			}
		}
	}
	waitFor(t, 60*time.Second, fmt.Sprintf("all %d rows", n), func() bool { return allDelivered(rec, n) })
	counts, rolledBack := delivered(rec)
	dups := 0
	for _, c := range counts {
		dups += c - 1
	}
	t.Logf("%d rows delivered, %d twice or more, across %d walsender kills and %d consumer failures", len(counts), dups, kills, failed.Load())
	if rolledBack != 0 {
		t.Errorf("%d rows of rolled-back transactions delivered", rolledBack)
	}
	if len(counts) != n {
		t.Errorf("%d distinct rows delivered, want %d", len(counts), n)
	}
	if kills < 2 {
		t.Errorf("only %d kills: the test did not exercise reconnection", kills)
	}
	// A persistent slot resumes: history was lost only when it was created.
	if losses := rec.historyLosses(); len(losses) != 1 {
		t.Errorf("history losses %q, want only the slot's creation", losses)
	}
	waitFor(t, 10*time.Second, "streaming again, caught up", func() bool {
		h := r.Health()
		return h.State == cdc.StateStreaming && h.LagBytes == 0 && h.LagTime == 0
	})
	if h := r.Health(); h.LastError == nil || h.HistoryLost || h.HistoryLosses != 1 {
		t.Errorf("health %+v: want the last error kept, one history loss", h)
	}
}

// TestAcknowledgement checks that the slot's confirmed position never passes a
// transaction the consumer has not returned for, that a failed Apply is
// delivered again, and that an idle listener's applied position reaches the
// server's WAL position (read-your-writes fence).
func TestAcknowledgement(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY)")
	exec(t, db, "CREATE TABLE unpublished (id int PRIMARY KEY)")
	rec := &recorder{}
	cfg := testConfig(t, dsn)
	cfg.Tables = []string{"t"}
	release := make(chan struct{})
	blocked := make(chan *cdc.Transaction, 1)
	var attempts3 atomic.Int64
	rec.onApply = func(ctx context.Context, tx *cdc.Transaction) error {
		switch value(tx.Events[0].(*cdc.RowChange), "id").Text {
		case "2":
			select {
			case blocked <- tx:
			default:
			}
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		case "3":
			if attempts3.Add(1) == 1 {
				return errors.New("injected failure of transaction 3")
			}
		}
		return nil
	}
	r := streaming(t, cfg, rec)
	exec(t, db, "INSERT INTO t VALUES (1)")
	exec(t, db, "INSERT INTO t VALUES (2)")
	var tx2 *cdc.Transaction
	select {
	case tx2 = <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("transaction 2 not delivered")
	}
	tx1 := rec.transactions()[0]
	// While Apply holds transaction 2, status updates go on (every 200 ms) and
	// acknowledge transaction 1, never 2.
	waitFor(t, 5*time.Second, "transaction 1 acknowledged", func() bool { return confirmedFlush(t, db, cfg.Slot) >= tx1.EndLSN })
	for range 5 {
		if c := confirmedFlush(t, db, cfg.Slot); c >= tx2.EndLSN {
			t.Fatalf("confirmed_flush_lsn %s reached transaction 2 (end %s) before Apply returned", c, tx2.EndLSN)
		}
		if h := r.Health(); h.AppliedLSN >= tx2.EndLSN || h.LagTime <= 0 {
			t.Fatalf("health %+v while transaction 2 is in Apply", h)
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(release)
	waitFor(t, 5*time.Second, "transaction 2 acknowledged", func() bool { return confirmedFlush(t, db, cfg.Slot) >= tx2.EndLSN })

	// Apply fails once for transaction 3: it is delivered again.
	exec(t, db, "INSERT INTO t VALUES (3)")
	waitFor(t, 10*time.Second, "row 3", func() bool { return len(rec.rows()) >= 3 })
	if n := attempts3.Load(); n != 2 {
		t.Errorf("transaction 3 applied in %d attempts, want 2", n)
	}
	if h := r.Health(); h.LastError == nil || !strings.Contains(h.LastError.Error(), "injected failure") {
		t.Errorf("last error %v, want the consumer's", h.LastError)
	}

	// Writes outside the publication move the WAL but deliver nothing: the
	// idle listener acknowledges the server's position anyway.
	exec(t, db, "INSERT INTO unpublished SELECT generate_series(1, 1000)")
	fence, err := cdc.CurrentWALLSN(context.Background(), db.PgConn())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "applied and confirmed positions past the fence "+fence.String(), func() bool {
		return r.Health().AppliedLSN >= fence && confirmedFlush(t, db, cfg.Slot) >= fence
	})
	// Read-your-writes: once the applied position passes the fence taken after
	// a commit, that commit has been applied.
	for i := 10; i < 20; i++ {
		exec(t, db, "INSERT INTO t VALUES ($1)", i)
		fence, err := cdc.CurrentWALLSN(context.Background(), db.PgConn())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		waitFor(t, 10*time.Second, "the fence", func() bool { return r.Health().AppliedLSN >= fence })
		rows := rec.rows()
		if got := value(rows[len(rows)-1], "id").Text; got != strconv.Itoa(i) {
			t.Fatalf("applied position %s passed the fence %s before row %d was applied (last %s)", r.Health().AppliedLSN, fence, i, got)
		}
		t.Logf("fence %s passed after %v", fence, time.Since(start))
	}
}

func TestTemporarySlot(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY)")
	rec := &recorder{}
	cfg := testConfig(t, dsn)
	cfg.Temporary = true
	r := streaming(t, cfg, rec)
	if losses := rec.historyLosses(); len(losses) != 1 || !strings.Contains(losses[0], "temporary") {
		t.Fatalf("history losses %q, want one for the temporary slot", losses)
	}
	exec(t, db, "INSERT INTO t VALUES (1)")
	waitFor(t, 10*time.Second, "row 1", func() bool { return len(rec.rows()) == 1 })
	// Every reconnection starts a new history.
	terminateWalsender(t, db, cfg.Slot)
	waitFor(t, 10*time.Second, "a second history loss", func() bool { return len(rec.historyLosses()) == 2 })
	waitFor(t, 10*time.Second, "streaming", func() bool { return r.Health().State == cdc.StateStreaming })
	exec(t, db, "INSERT INTO t VALUES (2)")
	waitFor(t, 10*time.Second, "row 2", func() bool { return len(rec.rows()) == 2 })
	r.stop()
	r.wait(t, 10*time.Second)
	// The server drops the slot as the walsender exits.
	waitFor(t, 10*time.Second, "the temporary slot gone", func() bool {
		var slots int
		if err := db.QueryRow(context.Background(), "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&slots); err != nil {
			t.Fatal(err)
		}
		return slots == 0
	})
}

func TestSlotDroppedUnderListener(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY)")
	rec := &recorder{}
	cfg := testConfig(t, dsn)
	cfg.Backoff.Min = 200 * time.Millisecond
	r := streaming(t, cfg, rec)
	exec(t, db, "INSERT INTO t VALUES (1)")
	waitFor(t, 10*time.Second, "row 1", func() bool { return len(rec.rows()) == 1 })
	// End the walsender (waiting for it to exit) and drop the slot before the
	// listener comes back.
	waitFor(t, 10*time.Second, "the slot dropped", func() bool {
		_, err := db.Exec(context.Background(), `SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, cfg.Slot)
		if err == nil {
			_, err = db.Exec(context.Background(), "SELECT pg_drop_replication_slot($1)", cfg.Slot)
		}
		return err == nil
	})
	waitFor(t, 10*time.Second, "history lost", func() bool { return len(rec.historyLosses()) == 2 })
	if losses := rec.historyLosses(); !strings.Contains(losses[1], "dropped") {
		t.Errorf("history loss %q, want one that says the slot was dropped", losses[1])
	}
	waitFor(t, 10*time.Second, "streaming", func() bool { return r.Health().State == cdc.StateStreaming })
	exec(t, db, "INSERT INTO t VALUES (2)")
	waitFor(t, 10*time.Second, "row 2", func() bool { return len(rec.rows()) == 2 })
	if h := r.Health(); h.HistoryLost || h.HistoryLosses != 2 {
		t.Errorf("health %+v, want 2 history losses, none pending", h)
	}
}

func TestSlotInUse(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY)")
	cfg := testConfig(t, dsn)
	first, second := &recorder{}, &recorder{}
	r1 := streaming(t, cfg, first)
	r2 := run(t, cfg, second)
	waitFor(t, 10*time.Second, "the second listener to find the slot in use", func() bool {
		h := r2.Health()
		return h.State == cdc.StateReconnecting && errors.Is(h.LastError, cdc.ErrSlotInUse)
	})
	t.Log(r2.Health().LastError)
	exec(t, db, "INSERT INTO t VALUES (1)")
	waitFor(t, 10*time.Second, "row 1 at the first listener", func() bool { return len(first.rows()) == 1 })
	// When the first stops, the second takes over where it left off.
	r1.stop()
	r1.wait(t, 10*time.Second)
	waitFor(t, 10*time.Second, "the second listener streaming", func() bool { return r2.Health().State == cdc.StateStreaming })
	exec(t, db, "INSERT INTO t VALUES (2)")
	waitFor(t, 10*time.Second, "row 2 at the second listener", func() bool { return len(second.rows()) >= 1 })
	if got := ids(second.rows(), "id"); got[0] != "2" || len(first.rows()) != 1 {
		t.Errorf("second listener got %v (first %d rows): want only row 2, the first's acknowledged row not again", got, len(first.rows()))
	}
}

// TestOwnServer runs the cases that need a server of their own: a restart,
// and WAL removed under a slot.
func TestOwnServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pg, err := pgcachetest.StartPostgres(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Terminate(context.Background()) })
	dsn := pg.URL()
	outer := t
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY)")

	t.Run("restart", func(t *testing.T) {
		rec := &recorder{}
		cfg := testConfig(t, dsn)
		r := streaming(t, cfg, rec)
		writer := connect(t, dsn)
		write(t, writer, 1, 200)
		writer.Close(ctx)
		db.Close(ctx)
		if err := pg.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		db = connect(outer, dsn)
		write(t, db, 201, 400)
		waitFor(t, 60*time.Second, "all 400 rows", func() bool { return allDelivered(rec, 400) })
		if _, rolledBack := delivered(rec); rolledBack != 0 {
			t.Errorf("%d rolled-back rows delivered", rolledBack)
		}
		if losses := rec.historyLosses(); len(losses) != 1 {
			t.Errorf("history losses %q, want only the slot's creation", losses)
		}
		if h := r.Health(); h.State != cdc.StateStreaming || h.LastError == nil {
			t.Errorf("health %+v: want streaming, with the restart's error kept", h)
		}
		t.Logf("last error: %v", r.Health().LastError)
		r.stop()
		r.wait(t, 10*time.Second)

		// A new listener (a new process) resumes the slot where the last
		// acknowledgement left it, with no loss of history.
		exec(t, db, "INSERT INTO t VALUES (401)")
		again := &recorder{}
		streaming(t, cfg, again)
		waitFor(t, 10*time.Second, "row 401", func() bool { return len(again.rows()) >= 1 })
		if got := ids(again.rows(), "id"); got[0] != "401" || len(again.historyLosses()) != 0 {
			t.Errorf("resumed listener got rows %v and history losses %q; want [401] and none", got, again.historyLosses())
		}
	})

	t.Run("wal removed", func(t *testing.T) {
		cfg := testConfig(t, dsn)
		r := streaming(t, cfg, &recorder{})
		r.stop()
		r.wait(t, 10*time.Second)
		// With the listener gone, produce more WAL than the slot may keep.
		exec(t, db, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
		exec(t, db, "SELECT pg_reload_conf()")
		t.Cleanup(func() {
			_, _ = db.Exec(context.Background(), "ALTER SYSTEM RESET max_slot_wal_keep_size")
			_, _ = db.Exec(context.Background(), "SELECT pg_reload_conf()")
		})
		exec(t, db, "CREATE TABLE filler (v text)")
		var status string
		waitFor(t, 60*time.Second, "wal_status = lost", func() bool {
			exec(t, db, "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)")
			exec(t, db, "SELECT pg_switch_wal()")
			exec(t, db, "CHECKPOINT")
			if err := db.QueryRow(ctx, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", cfg.Slot).Scan(&status); err != nil {
				t.Fatal(err)
			}
			return status == "lost"
		})
		rec := &recorder{}
		streaming(t, cfg, rec)
		if losses := rec.historyLosses(); len(losses) != 1 || !strings.Contains(losses[0], "lost") {
			t.Fatalf("history losses %q, want one that says the WAL was lost", losses)
		}
		exec(t, db, "INSERT INTO t VALUES (500)")
		waitFor(t, 10*time.Second, "row 500", func() bool { return len(rec.rows()) >= 1 })
	})
}

func TestWALLevelNotLogical(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pg, err := pgcachetest.StartPostgres(ctx, "wal_level=replica")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Terminate(context.Background()) })
	err = run(t, testConfig(t, pg.URL()), &recorder{}).wait(t, 30*time.Second)
	if !errors.Is(err, cdc.ErrWALLevel) || !cdc.IsPermanent(err) || !strings.Contains(err.Error(), "ALTER SYSTEM SET wal_level = logical") {
		t.Fatalf("Run = %v, want a permanent ErrWALLevel that says what to set", err)
	}
	t.Log(err)
}
