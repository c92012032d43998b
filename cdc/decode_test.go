package cdc

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"
)

// wire builds pgoutput messages by hand, field by field.
type wire []byte

func msg(kind byte) wire             { return wire{kind} }
func (w wire) u8(v byte) wire        { return append(w, v) }
func (w wire) u16(v uint16) wire     { return binary.BigEndian.AppendUint16(w, v) }
func (w wire) u32(v uint32) wire     { return binary.BigEndian.AppendUint32(w, v) }
func (w wire) u64(v uint64) wire     { return binary.BigEndian.AppendUint64(w, v) }
func (w wire) str(s string) wire     { return append(append(w, s...), 0) }
func (w wire) raw(s string) wire     { return append(w, s...) }
func (w wire) text(s string) wire    { return append(w.u8('t').u32(uint32(len(s))), s...) }
func (w wire) null() wire            { return w.u8('n') }
func (w wire) unchangedToast() wire  { return w.u8('u') }
func (w wire) time(t time.Time) wire { return w.u64(uint64(t.UnixMicro() - postgresEpoch)) }
func (w wire) cols(n uint16) wire    { return w.u16(n) }
func (w wire) col(key bool, name string, typ uint32, mod int32) wire {
	flags := byte(0)
	if key {
		flags = 1
	}
	return w.u8(flags).str(name).u32(typ).u32(uint32(mod))
}

var commitTime = time.Date(2026, 3, 1, 12, 30, 45, 123456000, time.UTC)

func begin(xid uint32) wire {
	return msg('B').u64(0x1_0000_0100).time(commitTime).u32(xid)
}

func commit(commitLSN, endLSN uint64) wire {
	return msg('C').u8(0).u64(commitLSN).u64(endLSN).time(commitTime)
}

// usersRelation describes public.users (id int4 key, name text, bio text).
func usersRelation(oid uint32, identity byte) wire {
	return usersColumns(msg('R').u32(oid), identity)
}

// usersRelationIn is usersRelation in a stream block of xid.
func usersRelationIn(xid uint32) wire {
	return usersColumns(msg('R').u32(xid).u32(16384), 'd')
}

func usersColumns(w wire, identity byte) wire {
	return w.str("public").str("users").u8(identity).cols(3).
		col(true, "id", 23, -1).col(false, "name", 25, -1).col(false, "bio", 25, -1)
}

var usersDef = &Relation{OID: 16384, Schema: "public", Name: "users", ReplicaIdentity: ReplicaIdentityDefault, Columns: []Column{
	{Name: "id", TypeOID: 23, TypeModifier: -1, Key: true},
	{Name: "name", TypeOID: 25, TypeModifier: -1},
	{Name: "bio", TypeOID: 25, TypeModifier: -1},
}}

// feed hands messages to a and returns the transactions they committed.
func feed(t *testing.T, a *assembler, msgs ...wire) []*Transaction {
	t.Helper()
	var txs []*Transaction
	for i, m := range msgs {
		tx, err := a.handle(m)
		if err != nil {
			t.Fatalf("message %d (%q): %v", i, m[0], err)
		}
		if tx != nil {
			txs = append(txs, tx)
		}
	}
	return txs
}

func text(s string) Value { return Value{Kind: ValueText, Text: s} }

var (
	null      = Value{Kind: ValueNull}
	absent    = Value{Kind: ValueAbsent}
	unchanged = Value{Kind: ValueUnchanged}
)

func TestDecodeTransaction(t *testing.T) {
	a := newAssembler(DefaultMaxTransactionBytes)
	txs := feed(t, a,
		begin(740),
		usersRelation(16384, 'd'),
		msg('I').u32(16384).u8('N').cols(3).text("1").text("ann").null(),
		// Update that keeps the key: no old tuple; bio is TOASTed and unchanged.
		msg('U').u32(16384).u8('N').cols(3).text("1").text("anne").unchangedToast(),
		// Update that changes the key: the old key only.
		msg('U').u32(16384).u8('K').cols(3).text("1").null().null().u8('N').cols(3).text("2").text("anne").null(),
		msg('D').u32(16384).u8('K').cols(3).text("2").null().null(),
		msg('R').u32(16390).str("").str("t2").u8('f').cols(1).col(true, "v", 1043, 14),
		msg('U').u32(16390).u8('O').cols(1).text("a").u8('N').cols(1).text("b"),
		msg('D').u32(16390).u8('O').cols(1).null(),
		msg('T').u32(2).u8(3).u32(16384).u32(16390),
		msg('M').u8(1).u64(0x1_0000_0200).str("pgcache.ddl").u32(5).raw("alter"),
		msg('M').u8(0).u64(0x1_0000_0210).str("other").u32(0), // non-transactional: not delivered
		msg('Y').u32(90000).str("public").str("mood"),
		msg('O').u64(7).str("origin"),
		commit(0x1_0000_0300, 0x1_0000_0330),
	)
	if len(txs) != 1 {
		t.Fatalf("got %d transactions, want 1", len(txs))
	}
	tx := txs[0]
	if tx.Xid != 740 || tx.CommitLSN != 0x1_0000_0300 || tx.EndLSN != 0x1_0000_0330 || !tx.CommitTime.Equal(commitTime) || tx.Streamed {
		t.Errorf("transaction = xid %d commit %s end %s at %v streamed %v", tx.Xid, tx.CommitLSN, tx.EndLSN, tx.CommitTime, tx.Streamed)
	}
	t2 := &Relation{OID: 16390, Schema: "pg_catalog", Name: "t2", ReplicaIdentity: ReplicaIdentityFull,
		Columns: []Column{{Name: "v", TypeOID: 1043, TypeModifier: 14, Key: true}}}
	want := []Event{
		&RowChange{Relation: usersDef, Op: OpInsert, New: []Value{text("1"), text("ann"), null}},
		&RowChange{Relation: usersDef, Op: OpUpdate, New: []Value{text("1"), text("anne"), unchanged}},
		&RowChange{Relation: usersDef, Op: OpUpdate, OldKind: OldKey, Old: []Value{text("1"), absent, absent}, New: []Value{text("2"), text("anne"), null}},
		&RowChange{Relation: usersDef, Op: OpDelete, OldKind: OldKey, Old: []Value{text("2"), absent, absent}},
		&RowChange{Relation: t2, Op: OpUpdate, OldKind: OldFull, Old: []Value{text("a")}, New: []Value{text("b")}},
		&RowChange{Relation: t2, Op: OpDelete, OldKind: OldFull, Old: []Value{null}},
		&Truncate{Relations: []*Relation{usersDef, t2}, Cascade: true, RestartIdentity: true},
		&Message{LSN: 0x1_0000_0200, Prefix: "pgcache.ddl", Content: []byte("alter")},
	}
	if !reflect.DeepEqual(tx.Events, want) {
		for i, e := range tx.Events {
			t.Logf("event %d: %+v", i, e)
		}
		t.Fatalf("events differ from the expected ones")
	}
	// All changes share the relation's one *Relation.
	if tx.Events[0].(*RowChange).Relation != tx.Events[3].(*RowChange).Relation {
		t.Error("row changes of one relation do not share its *Relation")
	}
	if !a.idle() || a.openBytes != 0 {
		t.Errorf("after commit: idle %v, open bytes %d", a.idle(), a.openBytes)
	}
}

func TestDecodeEveryPrefixFails(t *testing.T) {
	msgs := []wire{
		begin(1),
		usersRelation(16384, 'd'),
		msg('I').u32(16384).u8('N').cols(3).text("1").text("ann").null(),
		msg('U').u32(16384).u8('K').cols(3).text("1").null().null().u8('N').cols(3).text("2").text("b").null(),
		msg('D').u32(16384).u8('O').cols(3).text("2").text("b").null(),
		msg('T').u32(1).u8(0).u32(16384),
		msg('M').u8(1).u64(5).str("p").u32(3).raw("xyz"),
		commit(10, 20),
	}
	for i, m := range msgs {
		for n := 1; n < len(m); n++ {
			a := newAssembler(DefaultMaxTransactionBytes)
			for _, prev := range msgs[:i] {
				if _, err := a.handle(prev); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := a.handle(m[:n]); err == nil {
				t.Errorf("message %d (%q) cut to %d of %d bytes: no error", i, m[0], n, len(m))
			}
		}
	}
}

func TestDecodeProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		msgs []wire
	}{
		{"empty", []wire{{}}},
		{"unknown kind", []wire{msg('Z')}},
		{"commit without begin", []wire{commit(1, 2)}},
		{"nested begin", []wire{begin(1), begin(2)}},
		{"unknown relation", []wire{begin(1), msg('I').u32(99).u8('N').cols(0)}},
		{"column count", []wire{begin(1), usersRelation(16384, 'd'), msg('I').u32(16384).u8('N').cols(2).text("1").null()}},
		{"binary value", []wire{begin(1), usersRelation(16384, 'd'), msg('I').u32(16384).u8('N').cols(3).u8('b').u32(1).u8(1).null().null()}},
		{"insert with old tuple", []wire{begin(1), usersRelation(16384, 'd'), msg('I').u32(16384).u8('K').cols(3).text("1").null().null()}},
		{"delete without old tuple", []wire{begin(1), usersRelation(16384, 'd'), msg('D').u32(16384).u8('N').cols(3).text("1").null().null()}},
		{"huge column count", []wire{msg('R').u32(1).str("s").str("t").u8('d').cols(65535)}},
		{"insert outside transaction", []wire{usersRelation(16384, 'd'), msg('I').u32(16384).u8('N').cols(3).text("1").null().null()}},
		{"stream continues unknown", []wire{msg('S').u32(5).u8(0)}},
		{"stream commit unknown", []wire{msg('c').u32(5).u8(0).u64(1).u64(2).u64(3)}},
		{"stream stop outside", []wire{msg('E')}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAssembler(DefaultMaxTransactionBytes)
			var err error
			for _, m := range tc.msgs {
				if _, err = a.handle(m); err != nil {
					break
				}
			}
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
		})
	}
}

// streamed wraps change messages in a stream block of xid.
func streamed(xid uint32, first bool, changes ...wire) []wire {
	f := byte(0)
	if first {
		f = 1
	}
	out := []wire{msg('S').u32(xid).u8(f)}
	out = append(out, changes...)
	return append(out, msg('E'))
}

// sInsert is an insert into users in a stream block, by (sub)transaction xid.
func sInsert(xid uint32, id string) wire {
	return msg('I').u32(xid).u32(16384).u8('N').cols(3).text(id).null().null()
}

func ids(t *testing.T, tx *Transaction) []string {
	t.Helper()
	var out []string
	for _, e := range tx.Events {
		if c, ok := e.(*RowChange); ok {
			out = append(out, c.New[0].Text)
		}
	}
	return out
}

func TestDecodeStreamedTransactions(t *testing.T) {
	a := newAssembler(DefaultMaxTransactionBytes)
	var msgs []wire
	// Transactions 10 and 20 stream interleaved; 10 has subtransactions 11
	// (rolled back) and 12 (kept). An ordinary transaction commits between.
	msgs = append(msgs, streamed(10, true, usersRelationIn(10), sInsert(10, "a1"), sInsert(11, "a2"))...)
	msgs = append(msgs, streamed(20, true, sInsert(20, "b1"))...)
	msgs = append(msgs, begin(30), msg('I').u32(16384).u8('N').cols(3).text("c1").null().null(), commit(100, 110))
	msgs = append(msgs, streamed(10, false, sInsert(11, "a3"), sInsert(13, "a4"))...)
	msgs = append(msgs, msg('A').u32(10).u32(11)) // ROLLBACK TO the savepoint of 11 (and 13 nested in it)
	msgs = append(msgs, streamed(10, false, sInsert(12, "a5"), sInsert(10, "a6"))...)
	msgs = append(msgs, msg('A').u32(10).u32(99)) // a subtransaction that sent nothing
	msgs = append(msgs, streamed(20, false, sInsert(20, "b2"))...)
	msgs = append(msgs, msg('A').u32(20).u32(20)) // whole transaction 20 rolled back
	msgs = append(msgs, msg('c').u32(10).u8(0).u64(200).u64(210).time(commitTime))
	txs := feed(t, a, msgs...)
	if len(txs) != 2 {
		t.Fatalf("got %d transactions, want 2", len(txs))
	}
	if got := ids(t, txs[0]); !reflect.DeepEqual(got, []string{"c1"}) || txs[0].Streamed {
		t.Errorf("first transaction: %v streamed %v", got, txs[0].Streamed)
	}
	if got := ids(t, txs[1]); !reflect.DeepEqual(got, []string{"a1", "a5", "a6"}) {
		t.Errorf("streamed transaction rows = %v, want [a1 a5 a6]", got)
	}
	if tx := txs[1]; tx.Xid != 10 || tx.CommitLSN != 200 || tx.EndLSN != 210 || !tx.Streamed || !tx.CommitTime.Equal(commitTime) {
		t.Errorf("streamed transaction = %+v", tx)
	}
	if !a.idle() || a.openBytes != 0 {
		t.Errorf("after all: idle %v, open bytes %d", a.idle(), a.openBytes)
	}
	// A new connection forgets open transactions, not relations.
	feed(t, a, streamed(40, true, sInsert(40, "x"))...)
	a.reset()
	if !a.idle() || a.openBytes != 0 || a.relations[16384] == nil {
		t.Errorf("after reset: idle %v, open bytes %d, relation %v", a.idle(), a.openBytes, a.relations[16384])
	}
}

func TestDecodeOverflow(t *testing.T) {
	const rows = 1000
	row := msg('I').u32(16384).u8('N').cols(3).text("1").text("some name").null()
	size := eventSize(&RowChange{New: []Value{text("1"), text("some name"), null}})
	a := newAssembler(100 * size) // room for 100 rows
	msgs := []wire{begin(7), usersRelation(16384, 'd'),
		msg('M').u8(1).u64(1).str("p").u32(0)}
	for range rows {
		msgs = append(msgs, row)
	}
	msgs = append(msgs, msg('T').u32(1).u8(0).u32(16384), row, commit(50, 60))
	// A small transaction after the big one keeps its rows.
	msgs = append(msgs, begin(8), row, commit(70, 80))
	txs := feed(t, a, msgs...)
	if len(txs) != 2 {
		t.Fatalf("got %d transactions", len(txs))
	}
	ev := txs[0].Events
	if len(ev) != 3 {
		t.Fatalf("overflowed transaction has %d events, want message, truncate, overflow: %v", len(ev), ev)
	}
	if _, ok := ev[0].(*Message); !ok {
		t.Errorf("event 0 = %T, want *Message", ev[0])
	}
	if _, ok := ev[1].(*Truncate); !ok {
		t.Errorf("event 1 = %T, want *Truncate", ev[1])
	}
	if o, ok := ev[2].(*Overflow); !ok || o.Relation.OID != 16384 || o.Changes != rows+1 {
		t.Errorf("event 2 = %+v, want overflow of users with %d changes", ev[2], rows+1)
	}
	if got := ids(t, txs[1]); len(got) != 1 {
		t.Errorf("small transaction after the overflow has rows %v", got)
	}
	if a.openBytes != 0 {
		t.Errorf("open bytes %d after commits", a.openBytes)
	}
}

func TestDecodeOverflowWaitsForConsumerFirst(t *testing.T) {
	row := msg('I').u32(16384).u8('N').cols(3).text("1").null().null()
	size := eventSize(&RowChange{New: []Value{text("1"), null, null}})
	a := newAssembler(10 * size)
	held := int64(10 * size) // a committed transaction fills the budget
	waits := 0
	a.heldBytes = func() int64 { return held }
	a.waitHeld = func() error { waits++; held = 0; return nil }
	msgs := []wire{begin(1), usersRelation(16384, 'd')}
	for range 5 {
		msgs = append(msgs, row)
	}
	txs := feed(t, a, append(msgs, commit(1, 2))...)
	if waits != 1 || len(ids(t, txs[0])) != 5 {
		t.Errorf("waits %d, rows %d: want 1 wait and all 5 rows", waits, len(ids(t, txs[0])))
	}
	// When waiting fails (the connection ended), the error comes back.
	held = 10 * size
	stop := errors.New("stopped")
	a.waitHeld = func() error { return stop }
	if _, err := a.handle(begin(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.handle(row); !errors.Is(err, stop) {
		t.Errorf("err = %v, want %v", err, stop)
	}
}

func TestDecodeOverflowLargestStreamFirst(t *testing.T) {
	size := eventSize(&RowChange{New: []Value{text("1"), null, null}})
	a := newAssembler(10 * size)
	msgs := streamed(1, true, usersRelationIn(1))
	for range 8 {
		msgs = append(msgs, streamed(1, false, sInsert(1, "1"))...)
	}
	for range 4 {
		msgs = append(msgs, streamed(2, true, sInsert(2, "1"))...)
	}
	msgs = append(msgs, msg('c').u32(2).u8(0).u64(1).u64(2).u64(0), msg('c').u32(1).u8(0).u64(3).u64(4).u64(0))
	txs := feed(t, a, msgs...)
	if len(ids(t, txs[0])) != 4 {
		t.Errorf("the smaller transaction lost rows: %v", txs[0].Events)
	}
	if o, ok := txs[1].Events[len(txs[1].Events)-1].(*Overflow); !ok || o.Changes != 8 {
		t.Errorf("the larger transaction did not overflow: %v", txs[1].Events)
	}
}

func TestDecodeRelationChanges(t *testing.T) {
	a := newAssembler(DefaultMaxTransactionBytes)
	changes := func(txs []*Transaction) []*RelationChange {
		var out []*RelationChange
		for _, tx := range txs {
			for _, e := range tx.Events {
				if rc, ok := e.(*RelationChange); ok {
					out = append(out, rc)
				}
			}
		}
		return out
	}
	// First sight, then the same definition again (a new connection resends it).
	if rc := changes(feed(t, a, begin(1), usersRelation(16384, 'd'), commit(1, 2), begin(2), usersRelation(16384, 'd'), commit(3, 4))); len(rc) != 0 {
		t.Fatalf("unchanged definitions reported: %v", rc)
	}
	first := a.relations[16384]
	// Replica identity FULL.
	rc := changes(feed(t, a, begin(3), usersRelation(16384, 'f'), commit(5, 6)))
	if len(rc) != 1 || rc[0].Previous != first || rc[0].Current.ReplicaIdentity != ReplicaIdentityFull {
		t.Fatalf("identity change: %+v", rc)
	}
	// A column added.
	added := msg('R').u32(16384).str("public").str("users").u8('f').cols(4).
		col(true, "id", 23, -1).col(false, "name", 25, -1).col(false, "bio", 25, -1).col(false, "age", 23, -1)
	rc = changes(feed(t, a, begin(4), added, msg('I').u32(16384).u8('N').cols(4).text("1").null().null().text("30"), commit(7, 8)))
	if len(rc) != 1 || len(rc[0].Current.Columns) != 4 {
		t.Fatalf("column change: %+v", rc)
	}
	// Dropped and created again: a new OID under the known name.
	rc = changes(feed(t, a, begin(5), usersRelation(20000, 'd'), commit(9, 10)))
	if len(rc) != 1 || rc[0].Previous.OID != 16384 || rc[0].Current.OID != 20000 {
		t.Fatalf("new OID: %+v", rc)
	}
	if a.relations[16384] != nil || len(a.relations) != 1 || len(a.byName) != 1 {
		t.Errorf("the old OID was kept: %v %v", a.relations, a.byName)
	}
	// Renamed.
	renamed := msg('R').u32(20000).str("public").str("people").u8('d').cols(3).
		col(true, "id", 23, -1).col(false, "name", 25, -1).col(false, "bio", 25, -1)
	rc = changes(feed(t, a, begin(6), renamed, commit(11, 12)))
	if len(rc) != 1 || rc[0].Previous.Name != "users" || rc[0].Current.Name != "people" || len(a.byName) != 1 {
		t.Fatalf("rename: %+v, names %v", rc, a.byName)
	}
}

func TestLSN(t *testing.T) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"} {
		l, err := ParseLSN(s)
		if err != nil || l.String() != s {
			t.Errorf("ParseLSN(%q) = %v, %v", s, l, err)
		}
	}
	for _, s := range []string{"", "16", "x/1", "1/100000000", "/"} {
		if _, err := ParseLSN(s); err == nil {
			t.Errorf("ParseLSN(%q): no error", s)
		}
	}
}

func FuzzHandle(f *testing.F) {
	f.Add([]byte(usersRelation(1, 'd')), []byte(msg('I').u32(1).u8('N').cols(3).text("1").null().null()))
	f.Add([]byte(msg('S').u32(1).u8(1)), []byte(msg('U').u32(1).u32(1).u8('K').cols(1).null()))
	f.Fuzz(func(t *testing.T, m1, m2 []byte) {
		a := newAssembler(1 << 20)
		_, _ = a.handle(begin(1))
		_, _ = a.handle(m1)
		_, _ = a.handle(m2) // must not panic
	})
}

// BenchmarkAssemble measures decoding alone: transactions of 100 inserts of a
// 3-column row, from the bytes the server sends to a committed Transaction.
func BenchmarkAssemble(b *testing.B) {
	a := newAssembler(DefaultMaxTransactionBytes)
	if _, err := a.handle(usersRelation(16384, 'd')); err != nil {
		b.Fatal(err)
	}
	row := msg('I').u32(16384).u8('N').cols(3).text("123456").text("name 123456").text("123456000")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%100 == 0 {
			if _, err := a.handle(begin(1)); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := a.handle(row); err != nil {
			b.Fatal(err)
		}
		if i%100 == 99 {
			if _, err := a.handle(commit(1, 2)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
}
