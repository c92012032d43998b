package querycache_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"math"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/pgcache/pgcache/querycache"
)

// replayDriver is a database/sql driver whose queries return the Result registered
// under the query text, through querycache.Rows: database/sql sees exactly what a
// cache hit gives it.
type replayDriver struct{}

var replay = struct {
	sync.Mutex
	results map[string]func() driver.Rows
}{results: map[string]func() driver.Rows{}}

func init() { sql.Register("querycache-replay", replayDriver{}) }

// registerRows makes query return rows() through database/sql.
func registerRows(tb testing.TB, query string, rows func() driver.Rows) {
	tb.Helper()
	replay.Lock()
	defer replay.Unlock()
	replay.results[query] = rows
	tb.Cleanup(func() {
		replay.Lock()
		defer replay.Unlock()
		delete(replay.results, query)
	})
}

func (replayDriver) Open(string) (driver.Conn, error) { return replayConn{}, nil }

type replayConn struct{}

func (replayConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("not supported") }
func (replayConn) Close() error                        { return nil }
func (replayConn) Begin() (driver.Tx, error)           { return nil, errors.New("not supported") }

func (replayConn) QueryContext(_ context.Context, query string, _ []driver.NamedValue) (driver.Rows, error) {
	replay.Lock()
	rows, ok := replay.results[query]
	replay.Unlock()
	if !ok {
		return nil, errors.New("no result registered for " + query)
	}
	return rows(), nil
}

func openReplay(tb testing.TB) *sql.DB {
	tb.Helper()
	db, err := sql.Open("querycache-replay", "")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

func TestResultBuilderLimits(t *testing.T) {
	cols := textColumns(1)
	b := querycache.NewResultBuilder(cols, querycache.Limits{MaxRows: 2})
	for i := 0; i < 2; i++ {
		if err := b.Add([]driver.Value{"x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Add([]driver.Value{"x"}); !errors.Is(err, querycache.ErrOverLimit) {
		t.Fatalf("third row: %v", err)
	}
	if err := b.Add([]driver.Value{"x"}); !errors.Is(err, querycache.ErrOverLimit) {
		t.Fatalf("after the limit: %v", err)
	}
	if _, err := b.Result(); !errors.Is(err, querycache.ErrOverLimit) {
		t.Fatalf("Result: %v", err)
	}

	b = querycache.NewResultBuilder(cols, querycache.Limits{MaxBytes: 1000})
	if err := b.Add([]driver.Value{string(make([]byte, 500))}); err != nil {
		t.Fatal(err)
	}
	if err := b.Add([]driver.Value{make([]byte, 500)}); !errors.Is(err, querycache.ErrOverLimit) {
		t.Fatalf("over MaxBytes: %v", err)
	}

	b = querycache.NewResultBuilder(cols, querycache.Limits{})
	for i := 0; i < querycache.DefaultMaxRows; i++ {
		if err := b.Add([]driver.Value{int64(i)}); err != nil {
			t.Fatalf("row %d under the default limit: %v", i, err)
		}
	}
	if err := b.Add([]driver.Value{int64(0)}); !errors.Is(err, querycache.ErrOverLimit) {
		t.Fatalf("default MaxRows not applied: %v", err)
	}
}

func TestResultBuilderRejectsBadRows(t *testing.T) {
	b := querycache.NewResultBuilder(textColumns(2), querycache.Limits{})
	if err := b.Add([]driver.Value{"one"}); err == nil {
		t.Error("short row accepted")
	}
	b = querycache.NewResultBuilder(textColumns(1), querycache.Limits{})
	if err := b.Add([]driver.Value{int32(1)}); !errors.Is(err, querycache.ErrUnsupportedValue) {
		t.Errorf("int32 value: %v", err)
	}
	b = querycache.NewResultBuilder(textColumns(1), querycache.Limits{MaxRows: -1})
	if err := b.Add([]driver.Value{"x"}); err == nil {
		t.Error("negative limit accepted")
	}
}

func TestResultBuilderCopiesBytes(t *testing.T) {
	buf := []byte("abc")
	b := querycache.NewResultBuilder(textColumns(1), querycache.Limits{})
	if err := b.Add([]driver.Value{buf}); err != nil {
		t.Fatal(err)
	}
	copy(buf, "xyz") // a driver reusing its buffer for the next row
	res, err := b.Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res.Value(0, 0).([]byte)); got != "abc" {
		t.Fatalf("cached value changed with the driver's buffer: %q", got)
	}
}

// TestRowsThroughDatabaseSQL replays a result through database/sql and checks what
// the application sees: column types, scans into typed and untyped destinations,
// RawBytes that do not alias the cache, and empty versus NULL.
func TestRowsThroughDatabaseSQL(t *testing.T) {
	cols := []querycache.Column{
		{Name: "id", TypeOID: 20, DatabaseTypeName: "INT8", ScanType: querycache.ScanTypeInt64},
		{Name: "price", TypeOID: 1700, DatabaseTypeName: "NUMERIC", Precision: 10, Scale: 2, HasPrecisionScale: true, ScanType: querycache.ScanTypeFloat64},
		{Name: "name", TypeOID: 1043, DatabaseTypeName: "VARCHAR", Length: 20, HasLength: true, ScanType: querycache.ScanTypeString},
		{Name: "data", TypeOID: 17, DatabaseTypeName: "BYTEA", Length: math.MaxInt64, HasLength: true, ScanType: querycache.ScanTypeBytes},
		{Name: "at", TypeOID: 1184, DatabaseTypeName: "TIMESTAMPTZ", ScanType: querycache.ScanTypeTime},
	}
	at := time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)
	res := buildResult(t, cols,
		[]driver.Value{int64(1), "12.50", "alice", []byte("blob"), at},
		[]driver.Value{int64(2), nil, "", []byte{}, "infinity"},
		[]driver.Value{int64(3), "0", "carol", nil, nil},
	)
	registerRows(t, "q", func() driver.Rows { return res.Rows() })
	db := openReplay(t)

	rows, err := db.Query("q")
	if err != nil {
		t.Fatal(err)
	}
	cts, err := rows.ColumnTypes()
	if err != nil {
		t.Fatal(err)
	}
	for i, ct := range cts {
		c := cols[i]
		if ct.Name() != c.Name || ct.DatabaseTypeName() != c.DatabaseTypeName || ct.ScanType() != c.ScanType.Type() {
			t.Errorf("column %d: %s %s %v", i, ct.Name(), ct.DatabaseTypeName(), ct.ScanType())
		}
		if l, ok := ct.Length(); l != c.Length || ok != c.HasLength {
			t.Errorf("column %d length %d %v", i, l, ok)
		}
		if p, s, ok := ct.DecimalSize(); p != c.Precision || s != c.Scale || ok != c.HasPrecisionScale {
			t.Errorf("column %d decimal %d %d %v", i, p, s, ok)
		}
		if _, ok := ct.Nullable(); ok {
			t.Errorf("column %d: nullable reported though the driver did not", i)
		}
	}
	type row struct {
		id    int64
		price sql.NullString
		name  string
		data  []byte
		at    any
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.price, &r.name, &r.data, &r.at); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if rows.NextResultSet() {
		t.Error("a second result set")
	}
	want := []row{
		{1, sql.NullString{String: "12.50", Valid: true}, "alice", []byte("blob"), at},
		{2, sql.NullString{}, "", []byte{}, "infinity"},
		{3, sql.NullString{String: "0", Valid: true}, "carol", nil, nil},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
	if got[1].data == nil || got[2].data != nil {
		t.Error("empty and NULL bytea not told apart")
	}

	// An empty value first: no buffer has been grown yet.
	empty := buildResult(t, cols[3:4], []driver.Value{[]byte{}})
	registerRows(t, "empty", func() driver.Rows { return empty.Rows() })
	var data []byte
	if err := db.QueryRow("empty").Scan(&data); err != nil {
		t.Fatal(err)
	}
	if data == nil {
		t.Error("empty bytea replayed as NULL")
	}

	// RawBytes point into driver memory: writing to them must not reach the cache.
	rows, err = db.Query("q")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		var price, name, data sql.RawBytes
		var at any
		if err := rows.Scan(&id, &price, &name, &data, &at); err != nil {
			t.Fatal(err)
		}
		for i := range data {
			data[i] = '!'
		}
	}
	rows.Close()
	if v := string(res.Value(0, 3).([]byte)); v != "blob" {
		t.Fatalf("writing to RawBytes changed the cached result: %q", v)
	}
}

func TestRowsReplayIndependently(t *testing.T) {
	res := buildResult(t, textColumns(1), []driver.Value{"a"}, []driver.Value{"b"})
	r1, r2 := res.Rows(), res.Rows()
	dest := make([]driver.Value, 1)
	if err := r1.Next(dest); err != nil || dest[0] != "a" {
		t.Fatal(dest, err)
	}
	if err := r2.Next(dest); err != nil || dest[0] != "a" {
		t.Fatal(dest, err)
	}
	r1.Columns()[0] = "changed"
	if r2.Columns()[0] != "c0" || res.Column(0).Name != "c0" {
		t.Fatal("a caller's change to Columns reached the result")
	}
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r1.Next(dest); err != io.EOF {
		t.Fatalf("Next after Close: %v", err)
	}
	// Closing twice returns the Rows to the pool once: two new Rows are distinct.
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if a, b := res.Rows(), res.Rows(); a == b {
		t.Fatal("one pooled Rows handed out twice")
	}
	if err := r2.Next(dest); err != nil || dest[0] != "b" {
		t.Fatal(dest, err)
	}
}

// fakeRows is a driver.Rows with every optional column interface, for ColumnsOf.
type fakeRows struct{ scan reflect.Type }

func (fakeRows) Columns() []string                                 { return []string{"a"} }
func (fakeRows) Close() error                                      { return nil }
func (fakeRows) Next([]driver.Value) error                         { return io.EOF }
func (fakeRows) ColumnTypeDatabaseTypeName(int) string             { return "NUMERIC" }
func (fakeRows) ColumnTypeLength(int) (int64, bool)                { return 0, false }
func (fakeRows) ColumnTypePrecisionScale(int) (int64, int64, bool) { return 12, 3, true }
func (r fakeRows) ColumnTypeScanType(int) reflect.Type             { return r.scan }
func (fakeRows) ColumnTypeNullable(int) (bool, bool)               { return true, true }
func (fakeRows) ColumnTypeOID(int) uint32                          { return 1700 }

type bareRows struct{}

func (bareRows) Columns() []string         { return []string{"x", "y"} }
func (bareRows) Close() error              { return nil }
func (bareRows) Next([]driver.Value) error { return io.EOF }

func TestColumnsOf(t *testing.T) {
	cols, err := querycache.ColumnsOf(fakeRows{scan: reflect.TypeFor[float64]()})
	if err != nil {
		t.Fatal(err)
	}
	want := querycache.Column{Name: "a", TypeOID: 1700, DatabaseTypeName: "NUMERIC", Precision: 12, Scale: 3,
		HasPrecisionScale: true, Nullable: true, HasNullable: true, ScanType: querycache.ScanTypeFloat64}
	if cols[0] != want {
		t.Errorf("got %+v", cols[0])
	}
	if _, err := querycache.ColumnsOf(fakeRows{scan: reflect.TypeFor[sql.NullInt64]()}); !errors.Is(err, querycache.ErrUnsupportedColumn) {
		t.Errorf("unknown scan type: %v", err)
	}
	// A driver without the optional interfaces: database/sql's own answers.
	cols, err = querycache.ColumnsOf(bareRows{})
	if err != nil {
		t.Fatal(err)
	}
	if cols[1] != (querycache.Column{Name: "y", ScanType: querycache.ScanTypeAny}) {
		t.Errorf("got %+v", cols[1])
	}
	if querycache.ScanTypeAny.Type() != reflect.TypeFor[any]() {
		t.Error("ScanTypeAny is not database/sql's default")
	}
}
