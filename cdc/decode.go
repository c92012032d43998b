package cdc

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// This file decodes pgoutput messages (protocol version 2, streaming on, text
// values) into the package's types. It does not use pglogrepl's decoders: those
// index into the message without checking its length (a short message would
// panic) and copy every value; this one checks every read and slices all
// values of a message out of one string copy.

// errShortMessage reports a message that ends before its fields do.
var errShortMessage = errors.New("message too short")

// msgReader reads the fields of one message. A read past the end returns zero
// values and sets bad; the caller checks bad once at the end.
type msgReader struct {
	s   string
	off int
	bad bool
}

func (r *msgReader) take(n int) string {
	if r.bad || n < 0 || len(r.s)-r.off < n {
		r.bad = true
		return ""
	}
	v := r.s[r.off : r.off+n]
	r.off += n
	return v
}

func (r *msgReader) u8() uint8 {
	b := r.take(1)
	if len(b) < 1 {
		return 0
	}
	return b[0]
}

func (r *msgReader) u16() uint16 {
	b := r.take(2)
	if len(b) < 2 {
		return 0
	}
	return uint16(b[0])<<8 | uint16(b[1])
}

func (r *msgReader) u32() uint32 {
	b := r.take(4)
	if len(b) < 4 {
		return 0
	}
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func (r *msgReader) u64() uint64 { return uint64(r.u32())<<32 | uint64(r.u32()) }

// cstring reads a NUL-terminated string.
func (r *msgReader) cstring() string {
	if r.bad {
		return ""
	}
	i := strings.IndexByte(r.s[r.off:], 0)
	if i < 0 {
		r.bad = true
		return ""
	}
	v := r.s[r.off : r.off+i]
	r.off += i + 1
	return v
}

// err is the reader's error, if any, for a message of the given kind.
func (r *msgReader) err(kind string) error {
	if r.bad {
		return fmt.Errorf("cdc: pgoutput %s: %w", kind, errShortMessage)
	}
	return nil
}

// postgresEpoch is the origin of PostgreSQL timestamps, 2000-01-01 UTC, in
// microseconds since the Unix epoch.
const postgresEpoch = 946684800 * 1_000_000

func pgTime(us uint64) time.Time { return time.UnixMicro(postgresEpoch + int64(us)) }

// decodeRelation decodes the body of a Relation message.
func decodeRelation(r *msgReader) (*Relation, error) {
	rel := &Relation{OID: r.u32(), Schema: r.cstring(), Name: r.cstring(), ReplicaIdentity: ReplicaIdentity(r.u8())}
	n := int(r.u16())
	if err := r.err("relation"); err != nil {
		return nil, err
	}
	// Each column takes at least 10 bytes: refuse a count the message cannot hold
	// before allocating for it.
	if n*10 > len(r.s)-r.off {
		return nil, fmt.Errorf("cdc: pgoutput relation %d: %d columns: %w", rel.OID, n, errShortMessage)
	}
	rel.Columns = make([]Column, n)
	for i := range rel.Columns {
		flags := r.u8()
		rel.Columns[i] = Column{Name: r.cstring(), TypeOID: r.u32(), TypeModifier: int32(r.u32()), Key: flags&1 != 0}
	}
	if err := r.err("relation"); err != nil {
		return nil, err
	}
	if rel.Schema == "" {
		rel.Schema = "pg_catalog" // pgoutput's shorthand
	}
	return rel, nil
}

// decodeTuple decodes a TupleData of rel. In a key-only tuple, the NULLs that
// PostgreSQL sends for columns outside the key are reported as ValueAbsent.
func decodeTuple(r *msgReader, rel *Relation, keyOnly bool) ([]Value, error) {
	n := int(r.u16())
	if r.bad {
		return nil, r.err("tuple")
	}
	if n != len(rel.Columns) {
		return nil, fmt.Errorf("cdc: pgoutput tuple of %s has %d columns, its relation %d", rel, n, len(rel.Columns))
	}
	vals := make([]Value, n)
	for i := range vals {
		switch kind := r.u8(); kind {
		case 'n':
			if keyOnly && !rel.Columns[i].Key {
				vals[i].Kind = ValueAbsent
			} else {
				vals[i].Kind = ValueNull
			}
		case 'u':
			vals[i].Kind = ValueUnchanged
		case 't':
			vals[i] = Value{Kind: ValueText, Text: r.take(int(r.u32()))}
		default:
			if r.bad {
				return nil, r.err("tuple")
			}
			// 'b' (binary) is only sent when asked for, and the listener does not ask.
			return nil, fmt.Errorf("cdc: pgoutput tuple of %s: column %q has value kind %q", rel, rel.Columns[i].Name, kind)
		}
	}
	return vals, r.err("tuple")
}

// decodeRowChange decodes the body of an Insert, Update or Delete message.
func decodeRowChange(r *msgReader, op Op, relations map[uint32]*Relation) (*RowChange, error) {
	oid := r.u32()
	kind := r.u8()
	if err := r.err(op.String()); err != nil {
		return nil, err
	}
	rel := relations[oid]
	if rel == nil {
		return nil, fmt.Errorf("cdc: pgoutput %s of relation %d, which was not described", op, oid)
	}
	c := &RowChange{Relation: rel, Op: op}
	var err error
	if (op == OpUpdate || op == OpDelete) && (kind == 'K' || kind == 'O') {
		c.OldKind = OldKind(kind)
		if c.Old, err = decodeTuple(r, rel, kind == 'K'); err != nil {
			return nil, err
		}
		if op == OpDelete {
			return c, r.err(op.String())
		}
		kind = r.u8()
	}
	if op == OpDelete || kind != 'N' {
		return nil, fmt.Errorf("cdc: pgoutput %s of %s: unexpected tuple kind %q", op, rel, kind)
	}
	c.New, err = decodeTuple(r, rel, false)
	return c, err
}

// decodeTruncate decodes the body of a Truncate message.
func decodeTruncate(r *msgReader, relations map[uint32]*Relation) (*Truncate, error) {
	n := int(r.u32())
	opts := r.u8()
	if err := r.err("truncate"); err != nil {
		return nil, err
	}
	if n*4 > len(r.s)-r.off {
		return nil, fmt.Errorf("cdc: pgoutput truncate of %d relations: %w", n, errShortMessage)
	}
	t := &Truncate{Relations: make([]*Relation, n), Cascade: opts&1 != 0, RestartIdentity: opts&2 != 0}
	for i := range t.Relations {
		oid := r.u32()
		if t.Relations[i] = relations[oid]; t.Relations[i] == nil {
			return nil, fmt.Errorf("cdc: pgoutput truncate of relation %d, which was not described", oid)
		}
	}
	return t, r.err("truncate")
}

// decodeMessage decodes the body of a logical decoding Message; transactional
// reports whether it was written with transactional = true.
func decodeMessage(r *msgReader) (m *Message, transactional bool, err error) {
	flags := r.u8()
	m = &Message{LSN: LSN(r.u64()), Prefix: r.cstring()}
	m.Content = []byte(r.take(int(r.u32())))
	return m, flags&1 != 0, r.err("message")
}
