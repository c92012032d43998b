package cdc

import (
	"context"
	"fmt"
	"time"
)

// Consumer receives the change stream. The listener calls it from one goroutine
// at a time, never concurrently.
type Consumer interface {
	// Apply handles one committed transaction, in commit order. The listener
	// acknowledges the transaction's EndLSN to PostgreSQL only after Apply
	// returned nil for it (and for every transaction before it). An error makes
	// the listener reconnect and deliver the transaction again: delivery is at
	// least once, so Apply must be idempotent. Apply may keep tx; the listener
	// does not reuse it. Apply should return soon after ctx ends: the listener
	// cannot reconnect or stop before it does.
	Apply(ctx context.Context, tx *Transaction) error

	// HistoryLost tells the consumer that the listener cannot prove that no
	// committed change was missed: a slot was created (a temporary slot on every
	// connection, a persistent one the first time or after it was dropped), or
	// the slot's WAL was removed. The consumer must treat everything as changed.
	// It is called before any transaction of the new history is applied, and
	// again until it returns nil.
	HistoryLost(ctx context.Context, reason string) error
}

// ProgressConsumer is a Consumer that also wants to know when the applied position
// advances without a transaction: at the start of each connection (the slot's
// position), and when an idle stream's keepalive proved that every commit before
// applied was received and applied (see Health.AppliedLSN). It is
// called from the same goroutine as Apply, never concurrently with it; applied
// may be lower than the EndLSN of a transaction applied just before, so consumers
// keep the maximum. An error makes the listener reconnect.
type ProgressConsumer interface {
	Consumer
	Progress(ctx context.Context, applied LSN) error
}

// Transaction is one committed transaction of the published tables.
type Transaction struct {
	Xid        uint32    // top-level transaction id
	CommitLSN  LSN       // position of the commit record
	EndLSN     LSN       // end of the commit record: what is acknowledged after Apply
	CommitTime time.Time // commit timestamp, from the server's clock
	Streamed   bool      // it was received in pieces before its commit (a large transaction)

	// Events are the transaction's changes in the order they happened, except
	// that Overflow events, if any, come last.
	Events []Event

	size int64 // bytes charged against Config.MaxTransactionBytes
}

// Event is one of *RowChange, *Truncate, *RelationChange, *Message or *Overflow.
type Event interface{ event() }

func (*RowChange) event()      {}
func (*Truncate) event()       {}
func (*RelationChange) event() {}
func (*Message) event()        {}
func (*Overflow) event()       {}

// Op is the operation of a row change.
type Op uint8

// Row change operations.
const (
	OpInsert Op = 'I'
	OpUpdate Op = 'U'
	OpDelete Op = 'D'
)

func (o Op) String() string {
	switch o {
	case OpInsert:
		return "insert"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// OldKind says which old values PostgreSQL sent with an update or delete.
type OldKind uint8

const (
	// OldNone: no old values. An update under the default or index replica
	// identity that did not change the key; every insert.
	OldNone OldKind = 0
	// OldKey: only the replica identity key columns (Column.Key) of the old row;
	// the others are ValueAbsent. Deletes, and updates that changed the key.
	OldKey OldKind = 'K'
	// OldFull: the whole old row (REPLICA IDENTITY FULL).
	OldFull OldKind = 'O'
)

// RowChange is an inserted, updated or deleted row.
type RowChange struct {
	Relation *Relation
	Op       Op
	OldKind  OldKind
	// Old holds the old values for OldKey and OldFull, New the new row for
	// inserts and updates. Both are nil when absent, and otherwise have one
	// Value per Relation.Columns entry, in the same order.
	Old []Value
	New []Value
}

// ValueKind says what a Value holds.
type ValueKind uint8

const (
	// ValueText: Text is the column's value in PostgreSQL's text output format.
	ValueText ValueKind = 't'
	// ValueNull: the column is NULL.
	ValueNull ValueKind = 'n'
	// ValueUnchanged: a TOASTed value the update did not change, which
	// PostgreSQL does not send again: it equals the old value.
	ValueUnchanged ValueKind = 'u'
	// ValueAbsent: not sent because it is not part of the replica identity key
	// (in an OldKey tuple). Its old value is unknown, not NULL.
	ValueAbsent ValueKind = 'a'
)

// Value is one column of a row. Its name and type are those of the Column at
// the same position in the relation.
type Value struct {
	Kind ValueKind
	Text string
}

func (v Value) String() string {
	switch v.Kind {
	case ValueText:
		return v.Text
	case ValueNull:
		return "NULL"
	case ValueUnchanged:
		return "(unchanged toast)"
	case ValueAbsent:
		return "(absent)"
	}
	return fmt.Sprintf("Value(%c)", v.Kind)
}

// Truncate is a TRUNCATE of one or more relations (CASCADE lists all of them).
type Truncate struct {
	Relations       []*Relation
	Cascade         bool
	RestartIdentity bool
}

// RelationChange reports that a relation's definition differs from what the
// listener knew: columns, their types or key flags, or replica identity
// changed, or a relation was renamed, or a known schema.name now has a new OID
// (dropped and created again). The first sight of a relation is not a change.
// Row changes after it in the transaction use Current.
type RelationChange struct {
	Previous *Relation // the definition known before (another OID when recreated)
	Current  *Relation
}

// Message is a transactional logical decoding message, written with
// pg_logical_emit_message(true, prefix, content): for example from a DDL event
// trigger that announces schema changes in the transaction that made them.
// Non-transactional messages are not delivered: they are not ordered with
// commits.
type Message struct {
	LSN     LSN
	Prefix  string
	Content []byte
}

// Overflow replaces the row changes of one relation in a transaction that grew
// past Config.MaxTransactionBytes: any row of Relation may have changed.
type Overflow struct {
	Relation *Relation
	Changes  int // row changes left out
}

// ReplicaIdentity is a relation's REPLICA IDENTITY setting, which decides what
// old values updates and deletes carry.
type ReplicaIdentity uint8

// Replica identities, as pg_class.relreplident.
const (
	ReplicaIdentityDefault ReplicaIdentity = 'd' // primary key columns
	ReplicaIdentityNothing ReplicaIdentity = 'n' // no old values at all
	ReplicaIdentityFull    ReplicaIdentity = 'f' // the whole old row
	ReplicaIdentityIndex   ReplicaIdentity = 'i' // the columns of a chosen unique index
)

func (r ReplicaIdentity) String() string {
	switch r {
	case ReplicaIdentityDefault:
		return "default"
	case ReplicaIdentityNothing:
		return "nothing"
	case ReplicaIdentityFull:
		return "full"
	case ReplicaIdentityIndex:
		return "index"
	}
	return fmt.Sprintf("ReplicaIdentity(%c)", r)
}

// Relation is a published table as PostgreSQL described it in the stream. A
// *Relation is shared by every event that refers to it and must not be
// modified; a changed definition is a new *Relation.
type Relation struct {
	OID             uint32
	Schema          string
	Name            string
	ReplicaIdentity ReplicaIdentity
	Columns         []Column
}

// Column is a column of a relation.
type Column struct {
	Name         string
	TypeOID      uint32
	TypeModifier int32
	// Key marks the columns of the replica identity (all of them under FULL).
	Key bool
}

// String is the schema-qualified name.
func (r *Relation) String() string { return r.Schema + "." + r.Name }

// sameDefinition reports whether r and o describe the same relation alike.
func (r *Relation) sameDefinition(o *Relation) bool {
	if r.OID != o.OID || r.Schema != o.Schema || r.Name != o.Name ||
		r.ReplicaIdentity != o.ReplicaIdentity || len(r.Columns) != len(o.Columns) {
		return false
	}
	for i := range r.Columns {
		if r.Columns[i] != o.Columns[i] {
			return false
		}
	}
	return true
}
