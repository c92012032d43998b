package driver

import (
	"context"
	sqldriver "database/sql/driver"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgcache/pgcache/querycache"
)

// Conn is one pgcache connection: a pgx stdlib connection that pgcache sees every
// statement of. (*sql.Conn).Raw hands it to its function; Conn() reaches the
// underlying *pgx.Conn (see PgxConn).
type Conn struct {
	base      *stdlib.Conn
	connector *Connector

	// Caching state, used only when the connector caches (connector.rp != nil).
	sess       session
	qsess      querycache.Session // reused for every plan: no allocation per query
	txMayWrite bool               // the open transaction ran a statement that may have written
}

// Every optional interface database/sql looks for on a connection.
var (
	_ sqldriver.Conn               = (*Conn)(nil)
	_ sqldriver.ConnBeginTx        = (*Conn)(nil)
	_ sqldriver.ConnPrepareContext = (*Conn)(nil)
	_ sqldriver.ExecerContext      = (*Conn)(nil)
	_ sqldriver.QueryerContext     = (*Conn)(nil)
	_ sqldriver.Pinger             = (*Conn)(nil)
	_ sqldriver.NamedValueChecker  = (*Conn)(nil)
	_ sqldriver.SessionResetter    = (*Conn)(nil)
	_ sqldriver.Validator          = (*Conn)(nil)
)

// Conn returns the underlying *pgx.Conn, as (*stdlib.Conn).Conn does.
func (c *Conn) Conn() *pgx.Conn { return c.base.Conn() }

// PgxConn returns the *pgx.Conn behind a driver connection handed out by
// (*sql.Conn).Raw, for pgcache and pgx stdlib connections alike.
//
//	err := sqlConn.Raw(func(dc any) error {
//		conn, ok := driver.PgxConn(dc)
//		...
//	})
func PgxConn(driverConn any) (*pgx.Conn, bool) {
	if c, ok := driverConn.(interface{ Conn() *pgx.Conn }); ok {
		return c.Conn(), true
	}
	return nil, false
}

// Prepare is the context-free form of PrepareContext.
func (c *Conn) Prepare(query string) (sqldriver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

// PrepareContext prepares a statement on the server, as pgx does.
func (c *Conn) PrepareContext(ctx context.Context, query string) (sqldriver.Stmt, error) {
	s, err := c.base.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &Stmt{base: s.(*stdlib.Stmt), conn: c, query: query}, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.base.Close() }

// Begin is the context-free form of BeginTx.
func (c *Conn) Begin() (sqldriver.Tx, error) {
	return c.BeginTx(context.Background(), sqldriver.TxOptions{})
}

// BeginTx starts a transaction with pgx's handling of isolation levels and read-only.
func (c *Conn) BeginTx(ctx context.Context, opts sqldriver.TxOptions) (sqldriver.Tx, error) {
	tx, err := c.base.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{base: tx, conn: c}, nil
}

// ExecContext runs a statement that returns no rows. It never uses the cache, but
// what it may have written keeps this *sql.DB from reading older cached data.
func (c *Conn) ExecContext(ctx context.Context, query string, args []sqldriver.NamedValue) (sqldriver.Result, error) {
	res, err := c.base.ExecContext(ctx, query, args)
	c.afterExec(query)
	return res, err
}

// QueryContext runs a query, from the cache when it may.
func (c *Conn) QueryContext(ctx context.Context, query string, args []sqldriver.NamedValue) (sqldriver.Rows, error) {
	rp := c.connector.rp
	if rp == nil {
		return c.base.QueryContext(ctx, query, args)
	}
	return rp.query(ctx, c, nil, query, args)
}

// Ping checks the connection, as pgx does.
func (c *Conn) Ping(ctx context.Context) error { return c.base.Ping(ctx) }

// CheckNamedValue accepts every argument, as pgx does: pgx encodes them itself.
func (c *Conn) CheckNamedValue(nv *sqldriver.NamedValue) error { return c.base.CheckNamedValue(nv) }

// ResetSession prepares the connection for reuse, as pgx does (a connection left in
// a transaction is discarded).
func (c *Conn) ResetSession(ctx context.Context) error { return c.base.ResetSession(ctx) }

// IsValid reports whether the connection can be reused: a closed pgx connection
// cannot.
func (c *Conn) IsValid() bool { return !c.base.Conn().IsClosed() }

// afterExec records what a statement run through Exec may have changed: data, the
// session, and temporary objects that may shadow relations (CREATE TEMP TABLE).
func (c *Conn) afterExec(sql string) {
	rp := c.connector.rp
	if rp == nil {
		return
	}
	if rp.analyzer.SetsOnly(sql) {
		// A setting may change the identity (search_path, role), not the data:
		// no read-your-writes fence.
		c.sess.current = false
		return
	}
	mayWrite, createsTemp := rp.analyzer.Effects(sql)
	if createsTemp {
		c.sess.temp, c.sess.plans = true, nil
	}
	c.afterStatement(mayWrite)
}
