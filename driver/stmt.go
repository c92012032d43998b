package driver

import (
	"context"
	sqldriver "database/sql/driver"
	"errors"

	"github.com/jackc/pgx/v5/stdlib"
)

// Stmt is a prepared statement.
type Stmt struct {
	base  *stdlib.Stmt
	conn  *Conn
	query string
}

var (
	_ sqldriver.Stmt             = (*Stmt)(nil)
	_ sqldriver.StmtExecContext  = (*Stmt)(nil)
	_ sqldriver.StmtQueryContext = (*Stmt)(nil)
)

// Close deallocates the statement when no other Stmt of the connection uses it.
func (s *Stmt) Close() error { return s.base.Close() }

// NumInput is the number of parameters the server reported.
func (s *Stmt) NumInput() int { return s.base.NumInput() }

// Exec is not implemented, as in pgx: database/sql calls ExecContext.
func (s *Stmt) Exec([]sqldriver.Value) (sqldriver.Result, error) {
	return nil, errors.New("Stmt.Exec deprecated and not implemented")
}

// Query is not implemented, as in pgx: database/sql calls QueryContext.
func (s *Stmt) Query([]sqldriver.Value) (sqldriver.Rows, error) {
	return nil, errors.New("Stmt.Query deprecated and not implemented")
}

// ExecContext runs the statement.
func (s *Stmt) ExecContext(ctx context.Context, args []sqldriver.NamedValue) (sqldriver.Result, error) {
	res, err := s.base.ExecContext(ctx, args)
	s.conn.afterExec(s.query)
	return res, err
}

// QueryContext runs the statement as a query, from the cache when it may.
func (s *Stmt) QueryContext(ctx context.Context, args []sqldriver.NamedValue) (sqldriver.Rows, error) {
	rp := s.conn.connector.rp
	if rp == nil {
		return s.base.QueryContext(ctx, args)
	}
	return rp.query(ctx, s.conn, s, s.query, args)
}
