package querycache

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"
	"time"
)

// Column is everything database/sql can learn about one result column from the
// driver's Rows: its name and every ColumnType* answer, plus the PostgreSQL type OID
// (for the codec's readers and for explain output; database/sql does not expose it).
//
// The Has* fields record whether the driver answered at all: database/sql reports
// "not supported" (ok == false) differently from a zero answer.
type Column struct {
	Name             string
	TypeOID          uint32
	DatabaseTypeName string // "" when the driver does not implement RowsColumnTypeDatabaseTypeName

	Length    int64
	HasLength bool

	Precision, Scale  int64
	HasPrecisionScale bool

	Nullable    bool
	HasNullable bool

	ScanType ScanType
}

// ScanType names the reflect.Type a driver reports for a column
// (driver.RowsColumnTypeScanType) as a small number the codec can store. Only the
// types a database/sql driver plausibly reports have one; a column whose driver
// reports another type cannot be cached (ColumnsOf returns ErrUnsupportedColumn).
type ScanType uint8

// The scan types, numbered for the codec: never renumber, only append.
const (
	ScanTypeNil ScanType = iota // the driver returned a nil reflect.Type
	ScanTypeAny                 // interface{}: also what database/sql reports when the driver does not implement RowsColumnTypeScanType
	ScanTypeString
	ScanTypeBytes
	ScanTypeInt64
	ScanTypeInt32
	ScanTypeInt16
	ScanTypeInt8
	ScanTypeUint64
	ScanTypeUint32
	ScanTypeUint16
	ScanTypeUint8
	ScanTypeFloat64
	ScanTypeFloat32
	ScanTypeBool
	ScanTypeTime
	scanTypeCount
)

var scanTypes = [scanTypeCount]reflect.Type{
	ScanTypeNil:     nil,
	ScanTypeAny:     reflect.TypeFor[any](),
	ScanTypeString:  reflect.TypeFor[string](),
	ScanTypeBytes:   reflect.TypeFor[[]byte](),
	ScanTypeInt64:   reflect.TypeFor[int64](),
	ScanTypeInt32:   reflect.TypeFor[int32](),
	ScanTypeInt16:   reflect.TypeFor[int16](),
	ScanTypeInt8:    reflect.TypeFor[int8](),
	ScanTypeUint64:  reflect.TypeFor[uint64](),
	ScanTypeUint32:  reflect.TypeFor[uint32](),
	ScanTypeUint16:  reflect.TypeFor[uint16](),
	ScanTypeUint8:   reflect.TypeFor[uint8](),
	ScanTypeFloat64: reflect.TypeFor[float64](),
	ScanTypeFloat32: reflect.TypeFor[float32](),
	ScanTypeBool:    reflect.TypeFor[bool](),
	ScanTypeTime:    reflect.TypeFor[time.Time](),
}

// Type returns the reflect.Type the scan type stands for (nil for ScanTypeNil or an
// unknown number).
func (s ScanType) Type() reflect.Type {
	if s >= scanTypeCount {
		return nil
	}
	return scanTypes[s]
}

// ScanTypeOf returns the scan type of t, or false when t has none.
func ScanTypeOf(t reflect.Type) (ScanType, bool) {
	for i, st := range scanTypes {
		if st == t {
			return ScanType(i), true
		}
	}
	return 0, false
}

// Errors of building a result.
var (
	// ErrOverLimit: the result has more rows or bytes than Limits allow; it is not
	// cached (the caller still streams it to the application).
	ErrOverLimit = errors.New("querycache: result over the size limit")
	// ErrUnsupportedColumn: a column's metadata cannot be stored faithfully.
	ErrUnsupportedColumn = errors.New("querycache: unsupported column")
	// ErrUnsupportedValue: a value is not one of the driver.Value types.
	ErrUnsupportedValue = errors.New("querycache: unsupported value type")
)

// OIDer is implemented by driver Rows that can tell a column's PostgreSQL type OID.
// pgx's stdlib Rows does not; the driver wraps it to provide one (from the field
// descriptions), and ColumnsOf uses it when present.
type OIDer interface {
	ColumnTypeOID(index int) uint32
}

// ColumnsOf reads every column property database/sql can ask rows for, the way
// database/sql itself would (missing optional interfaces give the same answers
// database/sql gives). It fails with ErrUnsupportedColumn when a scan type has no
// ScanType, in which case the result must not be cached.
func ColumnsOf(rows driver.Rows) ([]Column, error) {
	names := rows.Columns()
	cols := make([]Column, len(names))
	for i := range cols {
		c := &cols[i]
		c.Name = names[i]
		c.ScanType = ScanTypeAny
		if p, ok := rows.(driver.RowsColumnTypeScanType); ok {
			st, ok := ScanTypeOf(p.ColumnTypeScanType(i))
			if !ok {
				return nil, fmt.Errorf("%w: column %q has scan type %v", ErrUnsupportedColumn, c.Name, p.ColumnTypeScanType(i))
			}
			c.ScanType = st
		}
		if p, ok := rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
			c.DatabaseTypeName = p.ColumnTypeDatabaseTypeName(i)
		}
		if p, ok := rows.(driver.RowsColumnTypeLength); ok {
			c.Length, c.HasLength = p.ColumnTypeLength(i)
		}
		if p, ok := rows.(driver.RowsColumnTypePrecisionScale); ok {
			c.Precision, c.Scale, c.HasPrecisionScale = p.ColumnTypePrecisionScale(i)
		}
		if p, ok := rows.(driver.RowsColumnTypeNullable); ok {
			c.Nullable, c.HasNullable = p.ColumnTypeNullable(i)
		}
		if p, ok := rows.(OIDer); ok {
			c.TypeOID = p.ColumnTypeOID(i)
		}
	}
	return cols, nil
}

// Result is one cached query result: the columns and the rows as driver.Values,
// exactly as the driver's Rows.Next produced them. A Result is immutable once built
// and safe for concurrent use; it is shared by every reader of the cache entry.
type Result struct {
	columns []Column
	names   []string
	values  []driver.Value // row-major, len = rows*len(columns)
	rows    int
	size    int
}

// NumRows returns the number of rows.
func (r *Result) NumRows() int { return r.rows }

// NumColumns returns the number of columns.
func (r *Result) NumColumns() int { return len(r.columns) }

// Column returns the metadata of column i.
func (r *Result) Column(i int) Column { return r.columns[i] }

// Value returns the value of column col in row row, as Rows.Next would give it.
// A []byte value is shared: callers must not modify it.
func (r *Result) Value(row, col int) driver.Value {
	return r.values[row*len(r.columns)+col]
}

// Size is the estimated memory the result holds, in bytes: what Limits.MaxBytes
// and the in-process store's byte bound count.
func (r *Result) Size() int { return r.size }

// Rows returns a driver.Rows replaying the result from its first row.
func (r *Result) Rows() *Rows { return newRows(r) }

// Limits bound what one cache entry may hold. A result over a limit is streamed to
// the application but not cached.
type Limits struct {
	// MaxRows is the most rows one entry may have. default: 10000
	MaxRows int
	// MaxBytes is the most bytes (Result.Size) one entry may have. default: 1 MiB
	MaxBytes int
}

// Default limits.
const (
	DefaultMaxRows  = 10000
	DefaultMaxBytes = 1 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxRows == 0 {
		l.MaxRows = DefaultMaxRows
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

func (l Limits) validate() error {
	if l.MaxRows < 0 || l.MaxBytes < 0 {
		return fmt.Errorf("querycache: negative limits %+v", l)
	}
	return nil
}

// Estimated sizes used by Result.Size: the interface word pair plus what a value
// points to. Estimates, not measurements: they only need to grow with the real
// footprint so that byte bounds mean something.
const (
	sizeResult = 96
	sizeColumn = 120
	sizeValue  = 16
	sizeHeader = 24
)

// ResultBuilder collects the rows of a result while the driver streams them to the
// application, and stops keeping them once the result is over its limits. It is not
// safe for concurrent use.
type ResultBuilder struct {
	columns []Column
	limits  Limits
	values  []driver.Value
	rows    int
	size    int
	err     error
}

// NewResultBuilder starts a result with the given columns (see ColumnsOf). Zero
// limits take the defaults.
func NewResultBuilder(columns []Column, limits Limits) *ResultBuilder {
	b := &ResultBuilder{columns: columns, limits: limits.withDefaults()}
	b.size = sizeResult
	for _, c := range columns {
		b.size += sizeColumn + len(c.Name) + len(c.DatabaseTypeName)
	}
	if err := limits.validate(); err != nil {
		b.err = err
	} else if b.size > b.limits.MaxBytes {
		b.err = ErrOverLimit
	}
	return b
}

// Add appends one row as returned by driver.Rows.Next. The values are copied where
// the driver may reuse their memory ([]byte). Once Add has returned an error the
// builder keeps no more rows and every later call returns the same error: the
// caller stops feeding it and does not cache the result. A row of the wrong width is
// an error, as is a value outside the driver.Value types.
func (b *ResultBuilder) Add(row []driver.Value) error {
	if b.err != nil {
		return b.err
	}
	if len(row) != len(b.columns) {
		b.fail(fmt.Errorf("querycache: row has %d values, result has %d columns", len(row), len(b.columns)))
		return b.err
	}
	if b.rows+1 > b.limits.MaxRows {
		b.fail(ErrOverLimit)
		return b.err
	}
	start := len(b.values)
	for _, v := range row {
		n, err := valueSize(v)
		if err != nil {
			b.fail(err)
			return b.err
		}
		b.size += n
		if v, ok := v.([]byte); ok && v != nil {
			b.values = append(b.values, append(make([]byte, 0, len(v)), v...))
			continue
		}
		b.values = append(b.values, v)
	}
	if b.size > b.limits.MaxBytes {
		b.values = b.values[:start]
		b.fail(ErrOverLimit)
		return b.err
	}
	b.rows++
	return nil
}

// fail stops the builder. Over the limits it keeps the rows it has (they are within
// the limits) for Buffered; after any other error it drops them.
func (b *ResultBuilder) fail(err error) {
	b.err = err
	if err != ErrOverLimit {
		b.values = nil
	}
}

// Buffered returns the rows added before the builder stopped over its limits, row
// major (each row is as wide as the columns), so the caller can still give them to
// the application. They are the builder's: it must not be used afterwards.
func (b *ResultBuilder) Buffered() []driver.Value {
	v := b.values
	b.values = nil
	return v
}

// Err returns the error that stopped the builder, if any.
func (b *ResultBuilder) Err() error { return b.err }

// Result returns the built result, or the error that stopped the builder.
func (b *ResultBuilder) Result() (*Result, error) {
	if b.err != nil {
		return nil, b.err
	}
	return newResult(b.columns, b.values, b.rows, b.size), nil
}

func newResult(columns []Column, values []driver.Value, rows, size int) *Result {
	names := make([]string, len(columns))
	for i, c := range columns {
		names[i] = c.Name
	}
	return &Result{columns: columns, names: names, values: values, rows: rows, size: size}
}

// valueSize returns the estimated footprint of a driver.Value, or
// ErrUnsupportedValue for a type database/sql drivers must not return.
func valueSize(v driver.Value) (int, error) {
	switch v := v.(type) {
	case nil, bool:
		return sizeValue, nil
	case int64, float64:
		return sizeValue + 8, nil
	case string:
		return sizeValue + sizeHeader + len(v), nil
	case []byte:
		return sizeValue + sizeHeader + len(v), nil
	case time.Time:
		return sizeValue + 24, nil
	default:
		return 0, fmt.Errorf("%w: %T", ErrUnsupportedValue, v)
	}
}
