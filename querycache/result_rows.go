package querycache

import (
	"database/sql/driver"
	"io"
	"reflect"
	"sync"
)

// Rows replays a Result as driver.Rows, with every optional Rows interface
// database/sql looks for, answering as the driver's Rows answered when the result
// was recorded. Each query gets its own Rows; the Result behind it is shared.
//
// Close returns the Rows to a pool: it must not be used after Close, as
// database/sql never does (a Rows closed twice is closed once).
type Rows struct {
	result   *Result
	next     int
	names    []string
	scratch  []byte    // holds this row's []byte values: database/sql may hand them out as RawBytes
	namesBuf [8]string // the names of a narrow result, in the same allocation as the Rows
}

var (
	_ driver.Rows                           = (*Rows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*Rows)(nil)
	_ driver.RowsColumnTypeLength           = (*Rows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*Rows)(nil)
	_ driver.RowsColumnTypeScanType         = (*Rows)(nil)
	_ driver.RowsColumnTypeNullable         = (*Rows)(nil)
	_ driver.RowsNextResultSet              = (*Rows)(nil)
)

// Columns returns the column names. The slice is the Rows' own copy: callers may
// modify it without touching the cached Result.
func (r *Rows) Columns() []string {
	if r.names == nil {
		if n := len(r.result.names); n <= len(r.namesBuf) {
			r.names = r.namesBuf[:n:n]
		} else {
			r.names = make([]string, n)
		}
		copy(r.names, r.result.names)
	}
	return r.names
}

// rowsPool recycles Rows: a hit would otherwise allocate one per query, a large
// part of what a hit costs.
var rowsPool = sync.Pool{New: func() any { return new(Rows) }}

// closedResult stands in for the result of a closed Rows: no rows, no columns.
var closedResult = &Result{}

// maxPooledScratch bounds the []byte buffer a pooled Rows keeps.
const maxPooledScratch = 64 << 10

func newRows(res *Result) *Rows {
	r := rowsPool.Get().(*Rows)
	r.result, r.next, r.names = res, 0, nil
	return r
}

// Close ends the replay and returns the Rows to the pool. It never fails.
func (r *Rows) Close() error {
	if r.result == closedResult {
		return nil
	}
	r.result, r.names = closedResult, nil
	clear(r.namesBuf[:])
	if cap(r.scratch) > maxPooledScratch {
		r.scratch = nil
	}
	rowsPool.Put(r)
	return nil
}

// Next copies the next row into dest, or returns io.EOF after the last row.
// []byte values are copied into a buffer the Rows owns and reuses on the next call,
// as driver.Rows allows, so that nothing the application receives (sql.RawBytes
// included) aliases the shared cached Result.
func (r *Rows) Next(dest []driver.Value) error {
	res := r.result
	if r.next >= res.rows {
		return io.EOF
	}
	width := len(res.columns)
	row := res.values[r.next*width : (r.next+1)*width]
	r.next++
	r.scratch = r.scratch[:0]
	for i, v := range row {
		b, ok := v.([]byte)
		if !ok || b == nil {
			dest[i] = v
			continue
		}
		if r.scratch == nil {
			// Non-nil even when empty: slicing a nil buffer would turn an empty value into NULL.
			r.scratch = make([]byte, 0, max(len(b), 64))
		}
		start := len(r.scratch)
		r.scratch = append(r.scratch, b...)
		// Full slice expression: an append by the receiver must not spill into the next value.
		dest[i] = r.scratch[start:len(r.scratch):len(r.scratch)]
	}
	return nil
}

// ColumnTypeDatabaseTypeName implements driver.RowsColumnTypeDatabaseTypeName.
func (r *Rows) ColumnTypeDatabaseTypeName(i int) string {
	return r.result.columns[i].DatabaseTypeName
}

// ColumnTypeLength implements driver.RowsColumnTypeLength.
func (r *Rows) ColumnTypeLength(i int) (int64, bool) {
	c := &r.result.columns[i]
	return c.Length, c.HasLength
}

// ColumnTypePrecisionScale implements driver.RowsColumnTypePrecisionScale.
func (r *Rows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	c := &r.result.columns[i]
	return c.Precision, c.Scale, c.HasPrecisionScale
}

// ColumnTypeScanType implements driver.RowsColumnTypeScanType.
func (r *Rows) ColumnTypeScanType(i int) reflect.Type {
	return r.result.columns[i].ScanType.Type()
}

// ColumnTypeNullable implements driver.RowsColumnTypeNullable. A driver that did
// not answer is replayed as ok == false, which database/sql treats exactly like a
// driver without the method.
func (r *Rows) ColumnTypeNullable(i int) (bool, bool) {
	c := &r.result.columns[i]
	return c.Nullable, c.HasNullable
}

// HasNextResultSet implements driver.RowsNextResultSet: a cached result is one set.
func (r *Rows) HasNextResultSet() bool { return false }

// NextResultSet implements driver.RowsNextResultSet.
func (r *Rows) NextResultSet() error { return io.EOF }
