package cdc

import (
	"fmt"
	"time"
)

// assembler turns the pgoutput messages of one replication connection into
// committed transactions. Ordinary transactions arrive whole between Begin and
// Commit. Large ones are streamed before they commit (protocol 2): blocks
// between Stream Start and Stream Stop, of several transactions interleaved,
// then Stream Commit, or Stream Abort for the whole transaction or for one of
// its subtransactions. Everything is buffered until the commit, within the
// memory bound.
//
// It is used by one goroutine. Its relations outlive a connection (so a
// definition resent by the next connection is not a change); its open
// transactions do not (the server sends them again from their start).
type assembler struct {
	maxBytes int64
	// heldBytes returns the bytes of committed transactions not yet applied,
	// which count against maxBytes too; waitHeld blocks until some are released
	// (or the connection ends). Both nil when nothing else holds memory.
	heldBytes func() int64
	waitHeld  func() error

	relations map[uint32]*Relation
	byName    map[string]uint32 // "schema.name" -> OID

	cur       *pending            // the ordinary transaction between Begin and Commit
	streams   map[uint32]*pending // streamed transactions by top-level xid
	inStream  *pending            // the one whose stream block is open
	openBytes int64               // bytes of all pending transactions
}

// pending is a transaction being received.
type pending struct {
	xid      uint32
	streamed bool
	events   []Event
	bytes    int64

	// subxacts lists, for a streamed transaction, where each subtransaction's
	// first change is in events: a Stream Abort of a subtransaction cuts events
	// there (what follows belongs to it or to subtransactions nested in it).
	subxacts []subxact

	// overflowed: row changes are no longer kept, only one Overflow per relation.
	overflowed bool
	overflows  []*Overflow
}

type subxact struct {
	xid   uint32
	first int
}

func newAssembler(maxBytes int64) *assembler {
	return &assembler{
		maxBytes:  maxBytes,
		relations: make(map[uint32]*Relation),
		byName:    make(map[string]uint32),
		streams:   make(map[uint32]*pending),
	}
}

// reset forgets the transactions of a connection that ended.
func (a *assembler) reset() {
	a.cur, a.inStream, a.openBytes = nil, nil, 0
	clear(a.streams)
}

// idle reports whether no transaction is being received.
func (a *assembler) idle() bool { return a.cur == nil && len(a.streams) == 0 }

// txOverhead is what a transaction costs besides its events.
const txOverhead = 128

// handle processes one pgoutput message and returns the transaction it
// committed, if it was a commit.
func (a *assembler) handle(data []byte) (*Transaction, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("cdc: pgoutput: empty message")
	}
	r := &msgReader{s: string(data), off: 1}
	switch kind := data[0]; kind {
	case 'B':
		// The final LSN and commit time come again in the commit message.
		_, _ = r.u64(), r.u64()
		xid := r.u32()
		if err := r.err("begin"); err != nil {
			return nil, err
		}
		if a.cur != nil || a.inStream != nil {
			return nil, fmt.Errorf("cdc: pgoutput: begin of %d inside a transaction", xid)
		}
		a.cur = &pending{xid: xid}
		return nil, nil
	case 'C':
		_ = r.u8() // flags, unused
		commitLSN, endLSN, ts := r.u64(), r.u64(), r.u64()
		if err := r.err("commit"); err != nil {
			return nil, err
		}
		if a.cur == nil {
			return nil, fmt.Errorf("cdc: pgoutput: commit without begin")
		}
		p := a.cur
		a.cur = nil
		return a.finish(p, LSN(commitLSN), LSN(endLSN), pgTime(ts)), nil
	case 'S':
		xid, first := r.u32(), r.u8()
		if err := r.err("stream start"); err != nil {
			return nil, err
		}
		if a.cur != nil || a.inStream != nil {
			return nil, fmt.Errorf("cdc: pgoutput: stream start of %d inside a transaction", xid)
		}
		p := a.streams[xid]
		if p == nil {
			if first == 0 {
				return nil, fmt.Errorf("cdc: pgoutput: stream of %d continues a stream that was not started", xid)
			}
			p = &pending{xid: xid, streamed: true}
			a.streams[xid] = p
		}
		a.inStream = p
		return nil, nil
	case 'E':
		if a.inStream == nil {
			return nil, fmt.Errorf("cdc: pgoutput: stream stop outside a stream")
		}
		a.inStream = nil
		return nil, nil
	case 'c':
		xid := r.u32()
		_ = r.u8() // flags, unused
		commitLSN, endLSN, ts := r.u64(), r.u64(), r.u64()
		if err := r.err("stream commit"); err != nil {
			return nil, err
		}
		p := a.streams[xid]
		if p == nil || a.inStream != nil {
			return nil, fmt.Errorf("cdc: pgoutput: stream commit of %d, which is not streaming", xid)
		}
		delete(a.streams, xid)
		return a.finish(p, LSN(commitLSN), LSN(endLSN), pgTime(ts)), nil
	case 'A':
		xid, subxid := r.u32(), r.u32()
		if err := r.err("stream abort"); err != nil {
			return nil, err
		}
		if p := a.streams[xid]; p != nil {
			a.abort(p, subxid)
		}
		return nil, nil
	case 'R', 'I', 'U', 'D', 'T', 'M':
		p := a.current(r)
		if err := r.err(string(kind)); err != nil {
			return nil, err
		}
		return nil, a.change(p, kind, r)
	case 'Y', 'O':
		// Type (for custom types, whose OIDs the columns already give) and
		// Origin (replication origin of a transaction): nothing to deliver.
		return nil, nil
	default:
		return nil, fmt.Errorf("cdc: pgoutput: unknown message kind %q", kind)
	}
}

// current returns the transaction a change message belongs to (nil outside any)
// and, in a stream block, reads the message's xid and notes where a
// subtransaction starts.
func (a *assembler) current(r *msgReader) *pending {
	if a.inStream == nil {
		return a.cur
	}
	p := a.inStream
	xid := r.u32()
	if xid != p.xid && !p.overflowed {
		found := false
		for _, s := range p.subxacts {
			if s.xid == xid {
				found = true
				break
			}
		}
		if !found {
			p.subxacts = append(p.subxacts, subxact{xid: xid, first: len(p.events)})
		}
	}
	return p
}

// change decodes the body of a change message of kind into p.
func (a *assembler) change(p *pending, kind byte, r *msgReader) error {
	switch kind {
	case 'R':
		rel, err := decodeRelation(r)
		if err != nil {
			return err
		}
		if rc := a.define(rel); rc != nil && p != nil {
			return a.add(p, rc, nil)
		}
		return nil
	case 'I', 'U', 'D':
		c, err := decodeRowChange(r, Op(kind), a.relations)
		if err != nil {
			return err
		}
		if p == nil {
			return fmt.Errorf("cdc: pgoutput: %s of %s outside a transaction", c.Op, c.Relation)
		}
		return a.add(p, c, c.Relation)
	case 'T':
		t, err := decodeTruncate(r, a.relations)
		if err != nil {
			return err
		}
		if p == nil {
			return fmt.Errorf("cdc: pgoutput: truncate outside a transaction")
		}
		return a.add(p, t, nil)
	case 'M':
		m, transactional, err := decodeMessage(r)
		if err != nil || !transactional {
			return err
		}
		if p == nil {
			return fmt.Errorf("cdc: pgoutput: transactional message outside a transaction")
		}
		return a.add(p, m, nil)
	}
	return nil
}

// define records a relation's definition and returns the change it makes, if
// it differs from what was known under its OID or its name.
func (a *assembler) define(rel *Relation) *RelationChange {
	prev := a.relations[rel.OID]
	if prev != nil && prev.sameDefinition(rel) {
		return nil
	}
	name := rel.String()
	if prev != nil {
		if old := prev.String(); old != name && a.byName[old] == rel.OID {
			delete(a.byName, old)
		}
	} else if oid, ok := a.byName[name]; ok {
		// The name was another relation's: it was dropped (or renamed, and its
		// new name not yet seen). Forget the old OID so the map stays as large
		// as the set of names.
		prev = a.relations[oid]
		delete(a.relations, oid)
	}
	a.relations[rel.OID] = rel
	a.byName[name] = rel.OID
	if prev == nil {
		return nil
	}
	return &RelationChange{Previous: prev, Current: rel}
}

// add appends an event to p. rel is the relation of a row change, nil for
// other events, which are always kept.
func (a *assembler) add(p *pending, e Event, rel *Relation) error {
	if rel != nil && p.overflowed {
		p.overflow(rel)
		return nil
	}
	size := eventSize(e)
	if err := a.reserve(p, size); err != nil {
		return err
	}
	if rel != nil && p.overflowed {
		p.overflow(rel)
		return nil
	}
	p.events = append(p.events, e)
	p.bytes += size
	a.openBytes += size
	return nil
}

// reserve makes room for size more bytes in p: it waits for committed
// transactions to be applied while they hold part of the budget, then
// overflows the largest open transaction (which may be p) until the open ones
// fit.
func (a *assembler) reserve(p *pending, size int64) error {
	for {
		held := int64(0)
		if a.heldBytes != nil {
			held = a.heldBytes()
		}
		if a.openBytes+held+size <= a.maxBytes {
			return nil
		}
		if held > 0 && a.waitHeld != nil {
			if err := a.waitHeld(); err != nil {
				return err
			}
			continue
		}
		big := p
		for _, o := range a.open() {
			if !o.overflowed && o.bytes > big.bytes {
				big = o
			}
		}
		if big.overflowed {
			return nil // nothing left to shed: a non-row event of an overflowed transaction
		}
		a.shed(big)
		if big == p {
			return nil
		}
	}
}

// open returns the transactions being received.
func (a *assembler) open() []*pending {
	ps := make([]*pending, 0, len(a.streams)+1)
	if a.cur != nil {
		ps = append(ps, a.cur)
	}
	for _, p := range a.streams {
		ps = append(ps, p)
	}
	return ps
}

// shed switches p to overflow: its row changes become Overflow events.
func (a *assembler) shed(p *pending) {
	p.overflowed = true
	kept := p.events[:0]
	var bytes int64
	for _, e := range p.events {
		if c, ok := e.(*RowChange); ok {
			p.overflow(c.Relation)
			continue
		}
		kept = append(kept, e)
		bytes += eventSize(e)
	}
	clear(p.events[len(kept):])
	p.events = kept
	a.openBytes -= p.bytes - bytes
	p.bytes = bytes
	// Events that remain are not row changes: a subtransaction abort keeps them
	// (a rolled-back truncate or message reported anyway is only an extra
	// invalidation), so their positions are no longer needed.
	p.subxacts = nil
}

// overflow counts one row change of rel left out of p.
func (p *pending) overflow(rel *Relation) {
	for _, o := range p.overflows {
		if o.Relation.OID == rel.OID {
			o.Relation = rel
			o.Changes++
			return
		}
	}
	p.overflows = append(p.overflows, &Overflow{Relation: rel, Changes: 1})
}

// abort drops a streamed transaction, or the part of it from a subtransaction on.
func (a *assembler) abort(p *pending, subxid uint32) {
	if subxid == p.xid {
		delete(a.streams, p.xid)
		a.openBytes -= p.bytes
		return
	}
	for i, s := range p.subxacts {
		if s.xid != subxid {
			continue
		}
		var bytes int64
		for _, e := range p.events[s.first:] {
			bytes += eventSize(e)
		}
		clear(p.events[s.first:])
		p.events = p.events[:s.first]
		p.subxacts = p.subxacts[:i]
		p.bytes -= bytes
		a.openBytes -= bytes
		return
	}
}

// finish turns a received transaction into its Transaction.
func (a *assembler) finish(p *pending, commitLSN, endLSN LSN, commitTime time.Time) *Transaction {
	a.openBytes -= p.bytes
	events := p.events
	for _, o := range p.overflows {
		events = append(events, o)
	}
	return &Transaction{
		Xid:        p.xid,
		CommitLSN:  commitLSN,
		EndLSN:     endLSN,
		CommitTime: commitTime,
		Streamed:   p.streamed,
		Events:     events,
		size:       p.bytes + txOverhead,
	}
}

// eventSize estimates the memory an event holds, for the budget: its structs,
// slices and the text of its values (which share one copy of their message).
func eventSize(e Event) int64 {
	const base = 64
	switch e := e.(type) {
	case *RowChange:
		return base + valuesSize(e.Old) + valuesSize(e.New)
	case *Truncate:
		return base + 8*int64(len(e.Relations))
	case *RelationChange:
		return base + 48*int64(len(e.Current.Columns))
	case *Message:
		return base + int64(len(e.Prefix)+len(e.Content))
	}
	return base
}

func valuesSize(vs []Value) int64 {
	n := 24 * int64(len(vs))
	for _, v := range vs {
		n += int64(len(v.Text))
	}
	return n
}
