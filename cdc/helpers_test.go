package cdc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/pgcachetest"
)

func TestMain(m *testing.M) { os.Exit(pgcachetest.Main(m)) }

// recorder is a Consumer that keeps what it is given. Hooks, when set, run
// first and may fail the call.
type recorder struct {
	mu      sync.Mutex
	txs     []*cdc.Transaction
	losses  []string
	onApply func(ctx context.Context, tx *cdc.Transaction) error
}

func (r *recorder) Apply(ctx context.Context, tx *cdc.Transaction) error {
	if r.onApply != nil {
		if err := r.onApply(ctx, tx); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.txs = append(r.txs, tx)
	return nil
}

func (r *recorder) HistoryLost(_ context.Context, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.losses = append(r.losses, reason)
	return nil
}

func (r *recorder) transactions() []*cdc.Transaction {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*cdc.Transaction(nil), r.txs...)
}

func (r *recorder) historyLosses() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.losses...)
}

// rows returns the row changes received so far, in order.
func (r *recorder) rows() []*cdc.RowChange {
	var out []*cdc.RowChange
	for _, tx := range r.transactions() {
		for _, e := range tx.Events {
			if c, ok := e.(*cdc.RowChange); ok {
				out = append(out, c)
			}
		}
	}
	return out
}

// value returns the named column of a row's new (or else old) values.
func value(c *cdc.RowChange, name string) cdc.Value {
	vals := c.New
	if vals == nil {
		vals = c.Old
	}
	for i, col := range c.Relation.Columns {
		if col.Name == name {
			return vals[i]
		}
	}
	return cdc.Value{}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var nonName = regexp.MustCompile(`[^a-z0-9_]+`)

// slotName derives a slot name from the test's name: slots are cluster-wide.
func slotName(t testing.TB) string {
	n := nonName.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(n) > 50 {
		n = n[len(n)-50:]
	}
	return "s_" + n
}

// testConfig is a listener config for dsn with quick status and retries.
func testConfig(t testing.TB, dsn string) cdc.Config {
	return cdc.Config{
		ConnString:        dsn,
		Slot:              slotName(t),
		CreatePublication: true,
		StatusInterval:    200 * time.Millisecond,
		Backoff:           cdc.Backoff{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		Logger:            slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
}

// running is a listener whose Run goroutine the test owns.
type running struct {
	*cdc.Listener
	stop    context.CancelFunc // ends Run
	stopped chan struct{}      // closed when Run returned
	err     error              // what Run returned, once stopped is closed
}

// run starts a listener and stops it when the test ends.
func run(t testing.TB, cfg cdc.Config, c cdc.Consumer) *running {
	t.Helper()
	l, err := cdc.NewListener(cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Listener: l, stop: cancel, stopped: make(chan struct{})}
	go func() {
		r.err = l.Run(ctx)
		close(r.stopped)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.stopped:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return r
}

// wait waits for Run to return and returns its error.
func (r *running) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-r.stopped:
		return r.err
	case <-time.After(timeout):
		t.Fatalf("Run did not return within %v; health %+v", timeout, r.Health())
		return nil
	}
}

// streaming starts a listener and waits until it streams.
func streaming(t testing.TB, cfg cdc.Config, c cdc.Consumer) *running {
	t.Helper()
	r := run(t, cfg, c)
	waitFor(t, 30*time.Second, "streaming", func() bool {
		select {
		case <-r.stopped:
			t.Fatalf("Run returned: %v", r.err)
		default:
		}
		return r.Health().State == cdc.StateStreaming
	})
	return r
}

// connect opens a connection that commits synchronously (the test servers run
// with synchronous_commit = off, which delays the stream by up to the WAL
// writer's 200 ms).
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	exec(t, conn, "SET synchronous_commit = on")
	return conn
}

func exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// terminateWalsender ends the server process streaming slot and reports
// whether there was one.
func terminateWalsender(t testing.TB, conn *pgx.Conn, slot string) bool {
	t.Helper()
	var n int
	err := conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots
		WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// confirmedFlush reads the slot's confirmed position.
func confirmedFlush(t testing.TB, conn *pgx.Conn, slot string) cdc.LSN {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := cdc.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// newDatabase gives the test a database of its own on the shared server.
func newDatabase(t testing.TB) string {
	t.Helper()
	return pgcachetest.SharedPostgres(t).NewDatabase(t)
}

// withOptions adds server settings to a connection URL.
func withOptions(dsn string, settings ...string) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	var opts []string
	for _, s := range settings {
		opts = append(opts, "-c "+s)
	}
	return dsn + sep + "options=" + strings.ReplaceAll(strings.ReplaceAll(strings.Join(opts, " "), " ", "%20"), "=", "%3D")
}

func ids(rows []*cdc.RowChange, col string) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = value(r, col).String()
	}
	return out
}

func seq(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprint(i))
	}
	return out
}
