package driver

import sqldriver "database/sql/driver"

// Tx is an explicit transaction. While it is open its connection reads nothing from
// the cache and writes nothing to it: its reads see its own uncommitted writes.
type Tx struct {
	base sqldriver.Tx
	conn *Conn
}

var _ sqldriver.Tx = (*Tx)(nil)

// Commit commits the transaction.
func (t *Tx) Commit() error {
	return t.base.Commit()
}

// Rollback rolls the transaction back.
func (t *Tx) Rollback() error {
	return t.base.Rollback()
}
