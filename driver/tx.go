package driver

import sqldriver "database/sql/driver"

// Tx is an explicit transaction. While it is open its connection reads nothing from
// the cache and writes nothing to it: its reads see its own uncommitted writes.
type Tx struct {
	base sqldriver.Tx
	conn *Conn
}

var _ sqldriver.Tx = (*Tx)(nil)

// Commit commits the transaction. If it may have written, this *sql.DB reads no
// cached data older than the commit from then on.
func (t *Tx) Commit() error {
	err := t.base.Commit()
	t.conn.afterStatement(false)
	return err
}

// Rollback rolls the transaction back.
func (t *Tx) Rollback() error {
	err := t.base.Rollback()
	t.conn.afterStatement(false)
	return err
}
