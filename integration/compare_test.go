package integration_test

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcache/pgcache/pgcachetest"
)

// The comparison harness. pgx's own database/sql driver is the reference: through
// pgcache, the same work on the same database must give the same values and the
// same errors. A check is a function of a *sql.DB, run once through the reference
// and twice through each subject (the second run is the one a cache answers from
// once it exists), each run after the check's setup has put the database in the
// same state.

// target is a *sql.DB under comparison, named for failure messages.
type target struct {
	name string
	db   *sql.DB
}

// env is one test database reached through the reference driver and the subjects.
type env struct {
	admin    *sql.DB // pgx: sets the database up between runs, never compared
	ref      target
	subjects []target
}

// subjectRuns is how many times compare runs a check through each subject.
const subjectRuns = 2

// newEnv creates a database of the test's own on the shared server, runs schema in
// it, and opens it through pgx (reference) and pgcache (subject).
func newEnv(t *testing.T, schema ...string) *env {
	t.Helper()
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	return newEnvDSN(t, dsn, schema...)
}

// newEnvDSN is newEnv for a database that already exists.
func newEnvDSN(t *testing.T, dsn string, schema ...string) *env {
	t.Helper()
	e := &env{
		admin:    openDB(t, "pgx", dsn),
		ref:      target{"pgx", openDB(t, "pgx", dsn)},
		subjects: []target{{"pgcache", openDB(t, "pgcache", dsn)}},
	}
	mustExec(t, e.admin, schema...)
	return e
}

// pgcache is the first subject's *sql.DB, for tests that check pgcache alone.
func (e *env) pgcache() *sql.DB { return e.subjects[0].db }

// check is one piece of work whose outcome must not depend on the driver.
type check[T any] struct {
	// setup runs through the admin connection before every run, so every run
	// starts from the same database state. Work that writes needs it.
	setup []string
	// work does the thing under test through db. Its value is compared with
	// go-cmp: exported fields only, no funcs or channels.
	work func(ctx context.Context, db *sql.DB) (T, error)
}

// compare runs c through the reference and through every subject and fails t when
// a subject's value or error differs from the reference's. It returns the
// reference's value and error, for the test's own expectations: a check where both
// drivers fail the same way is not a pass unless the test expected the failure.
func compare[T any](t *testing.T, e *env, c check[T]) (T, error) {
	t.Helper()
	want, wantErr := run(t, e, e.ref, c)
	for _, s := range e.subjects {
		for i := range subjectRuns {
			got, err := run(t, e, s, c)
			label := s.name
			if i > 0 {
				label += fmt.Sprintf(" (run %d)", i+1)
			}
			if diff := outcomeDiff(want, wantErr, got, err); diff != "" {
				t.Errorf("%s differs from %s (-%s +%s):\n%s", label, e.ref.name, e.ref.name, label, diff)
			}
		}
	}
	return want, wantErr
}

func run[T any](t *testing.T, e *env, tg target, c check[T]) (T, error) {
	t.Helper()
	mustExec(t, e.admin, c.setup...)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	return c.work(ctx, tg.db)
}

// outcomeDiff describes how a value and error differ from the expected ones, or is
// "" when they are the same.
func outcomeDiff(want any, wantErr error, got any, err error) string {
	return cmp.Diff(shapeOf(wantErr), shapeOf(err)) + cmp.Diff(want, got, valueOptions)
}

// valueOptions make go-cmp compare values as an application would: NaN equals NaN,
// times are the same instant in the same location, big integers by value.
var valueOptions = cmp.Options{
	cmpopts.EquateNaNs(),
	cmp.Comparer(func(a, b time.Time) bool {
		return a.Equal(b) && a.Location().String() == b.Location().String()
	}),
	// pgtype.Numeric holds a *big.Int, whose fields are unexported.
	cmp.Comparer(func(a, b *big.Int) bool {
		return (a == nil) == (b == nil) && (a == nil || a.Cmp(b) == 0)
	}),
}

// errShape is everything about an error that an application can observe and
// branch on: two drivers that give equal shapes give the same error.
type errShape struct {
	Text string
	// Types are the dynamic types of the error and of all it wraps, depth first.
	Types []string
	// PgError is the server's error, when there is one.
	PgError *pgconn.PgError
	// Is lists the well-known errors that errors.Is matches.
	Is          []string
	SafeToRetry bool
	Timeout     bool
}

// sentinels are the errors applications test for with errors.Is.
var sentinels = []struct {
	name string
	err  error
}{
	{"context.Canceled", context.Canceled},
	{"context.DeadlineExceeded", context.DeadlineExceeded},
	{"sql.ErrNoRows", sql.ErrNoRows},
	{"sql.ErrTxDone", sql.ErrTxDone},
	{"sql.ErrConnDone", sql.ErrConnDone},
	{"driver.ErrBadConn", sqldriver.ErrBadConn},
	{"driver.ErrSkip", sqldriver.ErrSkip},
	{"pgx.ErrNoRows", pgx.ErrNoRows},
	{"pgx.ErrTxClosed", pgx.ErrTxClosed},
	{"io.EOF", io.EOF},
	{"io.ErrUnexpectedEOF", io.ErrUnexpectedEOF},
	{"net.ErrClosed", net.ErrClosed},
	{"os.ErrDeadlineExceeded", os.ErrDeadlineExceeded},
	{"syscall.ECONNREFUSED", syscall.ECONNREFUSED},
	{"syscall.ECONNRESET", syscall.ECONNRESET},
}

// shapeOf describes err; nil for no error.
func shapeOf(err error) *errShape {
	if err == nil {
		return nil
	}
	s := &errShape{
		Text:        err.Error(),
		SafeToRetry: pgconn.SafeToRetry(err),
		Timeout:     pgconn.Timeout(err),
	}
	var walk func(error)
	walk = func(e error) {
		s.Types = append(s.Types, fmt.Sprintf("%T", e))
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			if next := u.Unwrap(); next != nil {
				walk(next)
			}
		case interface{ Unwrap() []error }:
			for _, next := range u.Unwrap() {
				walk(next)
			}
		}
	}
	walk(err)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		s.PgError = pgErr
	}
	for _, sn := range sentinels {
		if errors.Is(err, sn.err) {
			s.Is = append(s.Is, sn.name)
		}
	}
	return s
}

// sqlState is the SQLSTATE of a server error, or "" for any other error.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// TestOutcomeDiff guards the harness itself: a comparison is only worth something
// if differing values or errors make it fail.
func TestOutcomeDiff(t *testing.T) {
	t.Parallel()
	pgErr := func(code string) error {
		return fmt.Errorf("wrapped: %w", &pgconn.PgError{Severity: "ERROR", Code: code, Message: "m"})
	}
	when := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	tests := []struct {
		name         string
		want, got    any
		wantErr, err error
		differ       bool
	}{
		{"equal values", []any{int64(1), "a"}, []any{int64(1), "a"}, nil, nil, false},
		{"equal errors", nil, nil, pgErr("23505"), pgErr("23505"), false},
		{"NaN", []any{math.NaN()}, []any{math.NaN()}, nil, nil, false},
		{"value", []any{int64(1)}, []any{int64(2)}, nil, nil, true},
		{"value type", []any{int64(1)}, []any{int32(1)}, nil, nil, true},
		{"nil and empty bytes", []byte(nil), []byte{}, nil, nil, true},
		{"time location", when, when.In(time.FixedZone("X", 0)), nil, nil, true},
		{"error and none", nil, nil, errors.New("x"), nil, true},
		{"error text", nil, nil, errors.New("x"), errors.New("y"), true},
		{"error type", nil, nil, errors.New("x: y"), fmt.Errorf("x: %w", errors.New("y")), true},
		{"error wrapping", nil, nil, fmt.Errorf("x: %w", io.EOF), fmt.Errorf("x: %w", errors.New("EOF")), true},
		{"SQLSTATE", nil, nil, pgErr("23505"), pgErr("23503"), true},
		{"sentinel", nil, nil, context.Canceled, errors.New(context.Canceled.Error()), true},
	}
	for _, tt := range tests {
		diff := outcomeDiff(tt.want, tt.wantErr, tt.got, tt.err)
		if (diff != "") != tt.differ {
			t.Errorf("%s: outcomeDiff = %q, want a difference: %v", tt.name, diff, tt.differ)
		}
	}
}
