// Package nopdriver is a database/sql driver that does nothing: every query
// returns the same canned rows, without I/O. Benchmarks use it as the floor that
// database/sql itself costs (connection pool, argument conversion, Rows, Scan),
// which no driver can go below.
package nopdriver

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
)

// Connector returns Rows for every query, whatever its text and arguments. Use it
// with sql.OpenDB. Its fields must not change once the *sql.DB is open.
type Connector struct {
	Columns []string
	// Rows are the values of each row, in driver.Value types (int64, float64, bool,
	// []byte, string, time.Time or nil), each as long as Columns.
	Rows [][]driver.Value
}

var (
	_ driver.Connector         = (*Connector)(nil)
	_ driver.Conn              = (*conn)(nil)
	_ driver.QueryerContext    = (*conn)(nil)
	_ driver.ExecerContext     = (*conn)(nil)
	_ driver.SessionResetter   = (*conn)(nil)
	_ driver.Validator         = (*conn)(nil)
	_ driver.Rows              = (*rows)(nil)
	_ driver.NamedValueChecker = (*conn)(nil)
)

// Connect returns a connection; it never fails.
func (c *Connector) Connect(context.Context) (driver.Conn, error) { return &conn{c: c}, nil }

// Driver returns a driver whose Open is not supported: use the Connector.
func (c *Connector) Driver() driver.Driver { return nopDriver{} }

type nopDriver struct{}

func (nopDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("nopdriver: use sql.OpenDB with a Connector")
}

type conn struct {
	c    *Connector
	rows rows // reused: database/sql closes one Rows before the conn runs another query
}

func (c *conn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("nopdriver: prepared statements are not supported")
}

func (c *conn) Close() error { return nil }

func (c *conn) Begin() (driver.Tx, error) {
	return nil, errors.New("nopdriver: transactions are not supported")
}

// QueryContext returns the canned rows.
func (c *conn) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	c.rows = rows{c: c.c}
	return &c.rows, nil
}

// ExecContext does nothing.
func (c *conn) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(0), nil
}

// CheckNamedValue accepts every argument as it is, as pgx's driver does.
func (c *conn) CheckNamedValue(*driver.NamedValue) error { return nil }

func (c *conn) ResetSession(context.Context) error { return nil }

func (c *conn) IsValid() bool { return true }

type rows struct {
	c    *Connector
	next int
}

func (r *rows) Columns() []string { return r.c.Columns }

func (r *rows) Close() error { return nil }

func (r *rows) Next(dest []driver.Value) error {
	if r.next >= len(r.c.Rows) {
		return io.EOF
	}
	copy(dest, r.c.Rows[r.next])
	r.next++
	return nil
}
