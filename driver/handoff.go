package driver

import (
	sqldriver "database/sql/driver"
	"reflect"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgcache/pgcache/querycache"
)

// handoffRows continues, for the leader's caller, a result that grew too large to
// cache: the rows the fill already read, then the rest from PostgreSQL.
type handoffRows struct {
	base    *stdlib.Rows
	width   int
	pending []sqldriver.Value // row-major: rows read by the fill, not yet returned
}

// newHandoffRows takes the rows the builder kept, plus the row that did not fit.
func newHandoffRows(b *querycache.ResultBuilder, last []sqldriver.Value, base sqldriver.Rows) sqldriver.Rows {
	pending := b.Buffered()
	for _, v := range last {
		if p, ok := v.([]byte); ok && p != nil {
			v = append([]byte(nil), p...) // the driver may reuse dest's memory
		}
		pending = append(pending, v)
	}
	return &handoffRows{base: base.(*stdlib.Rows), width: len(last), pending: pending}
}

var (
	_ sqldriver.Rows                           = (*handoffRows)(nil)
	_ sqldriver.RowsColumnTypeDatabaseTypeName = (*handoffRows)(nil)
	_ sqldriver.RowsColumnTypeLength           = (*handoffRows)(nil)
	_ sqldriver.RowsColumnTypePrecisionScale   = (*handoffRows)(nil)
	_ sqldriver.RowsColumnTypeScanType         = (*handoffRows)(nil)
)

func (r *handoffRows) Columns() []string { return r.base.Columns() }

func (r *handoffRows) Close() error {
	r.pending = nil
	return r.base.Close()
}

func (r *handoffRows) Next(dest []sqldriver.Value) error {
	if len(r.pending) >= r.width && r.width > 0 {
		copy(dest, r.pending[:r.width])
		r.pending = r.pending[r.width:]
		return nil
	}
	return r.base.Next(dest)
}

func (r *handoffRows) ColumnTypeDatabaseTypeName(i int) string {
	return r.base.ColumnTypeDatabaseTypeName(i)
}

func (r *handoffRows) ColumnTypeLength(i int) (int64, bool) { return r.base.ColumnTypeLength(i) }

func (r *handoffRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	return r.base.ColumnTypePrecisionScale(i)
}

func (r *handoffRows) ColumnTypeScanType(i int) reflect.Type { return r.base.ColumnTypeScanType(i) }
