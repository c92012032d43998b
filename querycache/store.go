package querycache

import (
	"context"
	"errors"
	"time"
)

// Store holds cached results and decides, on every read, whether an entry is still
// valid. The three implementations are the in-process L1, Redis, and Tiered (L1 in
// front of Redis); one contract test suite (store_contract_test.go) runs against all
// of them.
//
// # Validity (DESIGN.md, "Correctness model")
//
// Every tag carries the commit LSN of its last invalidation. An entry records the
// Stamp taken before the database read that produced it and the tags it depends on.
// An entry is valid only while the store's generation is the one in its stamp and
// every one of its tags was last invalidated at an LSN ≤ the stamp's watermark. A
// tag the store no longer remembers (its memory of tags is bounded) counts as
// invalidated at the highest LSN the store ever forgot, never as "never
// invalidated". So a fill that raced an invalidation is born invalid: Set may reject
// it, and Get never returns it, whichever of the two happens first.
//
// # Contract
//
//   - Get returns (nil, nil) on a miss, including an entry that is absent, expired,
//     or no longer valid (the store may delete it). An error means the store could
//     not answer (unreachable, corrupt value: see ErrCorrupt, ErrUnavailable); the
//     caller treats it as a miss. Results are immutable and shared: callers must not
//     modify them.
//   - Set stores an entry unless it is already known to be invalid (ErrStaleFill),
//     is too large for the store, or the store cannot be reached. A rejected or lost
//     Set is harmless: the next read misses.
//   - Apply applies one invalidation batch. It is idempotent: applying a batch again
//     (at-least-once delivery) invalidates nothing that was valid. When Apply
//     returns nil, no later Get returns an entry the batch invalidated. When it
//     returns an error, the store has made sure (or will make sure before it answers
//     again) that such entries are not returned, if need be by dropping everything.
//   - Stamp is cheap (no I/O) and never blocks.
//   - All methods are safe for concurrent use; every blocking call stops when ctx is
//     done. After Close, Get misses and Set and Apply do nothing.
type Store interface {
	// Get returns the valid entry under key. watermark is the caller's watermark:
	// a shared store that has applied fewer invalidations than that must not answer.
	Get(ctx context.Context, key string, watermark LSN) (*Result, error)
	// Set stores e under key, replacing what was there.
	Set(ctx context.Context, key string, e Entry) error
	// Apply applies one invalidation batch (see Invalidation).
	Apply(ctx context.Context, inv Invalidation) error
	// Stamp returns the stamp for a database read about to start, given the
	// caller's current watermark.
	Stamp(watermark LSN) Stamp
	// Close releases what the store holds (not a Redis client it was given).
	Close() error
}

// Entry is what a fill stores: the result, what it depends on, and when it was read.
type Entry struct {
	Result *Result
	// Tags are the tags the result depends on (the query plan's read set and
	// predicate tags). An entry with no tags is never invalidated but by TTL and
	// flushes: callers must give at least the relation-wide tags.
	Tags []Tag
	// Stamp is what Store.Stamp returned before the database read began.
	Stamp Stamp
	// TTL bounds the entry's life: a backstop for lost invalidations, not the
	// mechanism. Must be positive. The in-process store checks it against a clock
	// that ticks every 100ms, so an entry may live that much longer there.
	TTL time.Duration
}

// Stamp identifies the point before a database read: the watermark (every commit at
// or below it has its invalidations applied) and the generations of the stores.
// Take it with Store.Stamp (or Cache.Stamp) BEFORE the read starts.
type Stamp struct {
	// Watermark is the highest commit LSN whose invalidations were fully applied
	// when the stamp was taken.
	Watermark LSN
	// local is the in-process store's generation; shared is the last generation
	// seen of the shared (Redis) store. A flush or a detected loss of invalidation
	// state starts a new generation; an entry is valid only in its own.
	local  uint64
	shared uint64
}

// Invalidation is one input from the change stream. Its parts are applied in this
// order: Flush, then Tags at Commit, then Watermark.
type Invalidation struct {
	// Flush drops every entry (a new generation): after a lost replication slot, a
	// lost fan-out, or anything else that may have skipped invalidations.
	Flush bool
	// Tags are invalidated at Commit: every entry depending on one of them, read
	// before Commit was applied, becomes invalid. Relation-wide events (TRUNCATE,
	// schema changes, changes without old values) are the relation's "all entries"
	// tag.
	Tags []Tag
	// Commit is the commit LSN of the transaction (or the highest of the batch of
	// transactions) the tags come from. Required when Tags is not empty.
	Commit LSN
	// Watermark, when not zero, advances the watermark after the tags are applied:
	// every commit at or below it is fully applied. With Flush it may also move the
	// watermark back (a new replication stream).
	Watermark LSN
}

// Errors of the stores.
var (
	// ErrStaleFill: Set refused an entry already invalid when it arrived (a tag
	// was invalidated after its stamp, or its generation is over).
	ErrStaleFill = errors.New("querycache: stale fill rejected")
	// ErrUnavailable: the store did not call a shared server because its circuit
	// breaker is open, or it is closed.
	ErrUnavailable = errors.New("querycache: store unavailable")
	// ErrTooLarge: the entry is larger than the store accepts.
	ErrTooLarge = errors.New("querycache: entry too large for the store")
)

func (e *Entry) validate() error {
	if e.Result == nil {
		return errors.New("querycache: entry without a result")
	}
	if e.TTL <= 0 {
		return errors.New("querycache: entry TTL must be positive")
	}
	return nil
}

func (inv *Invalidation) validate() error {
	if len(inv.Tags) > 0 && inv.Commit == 0 {
		return errors.New("querycache: invalidation tags without a commit LSN")
	}
	return nil
}
