package querycache

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// L1Config configures the in-process store.
type L1Config struct {
	// MaxBytes bounds the memory of the entries (by Result.Size plus key and tags).
	// default: 64 MiB
	MaxBytes int64
	// MaxTags bounds how many tag invalidations are remembered. When more tags have
	// been invalidated, the oldest are forgotten and count as invalidated at the
	// highest LSN forgotten (entries older than that become misses). default: 100000
	MaxTags int
}

// L1 defaults.
const (
	DefaultL1MaxBytes = 64 << 20
	DefaultL1MaxTags  = 100000
	// l1TimeResolution is how late an in-process entry may expire.
	l1TimeResolution = 100 * time.Millisecond
)

func (c L1Config) withDefaults() L1Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultL1MaxBytes
	}
	if c.MaxTags == 0 {
		c.MaxTags = DefaultL1MaxTags
	}
	return c
}

func (c L1Config) validate() error {
	if c.MaxBytes < 0 || c.MaxTags < 0 {
		return fmt.Errorf("querycache: invalid L1 config %+v", c)
	}
	return nil
}

// L1 is the in-process Store: an otter cache bounded by bytes, holding decoded
// Results (a hit costs no decoding and no allocation), and a bounded table of tag
// invalidations. Entries are checked against the table on every read, so an
// invalidation takes effect the moment Apply returns, with no per-entry work.
type L1 struct {
	cache *otter.Cache[string, *l1Entry]
	// clock tells the time for TTLs, to l1TimeResolution: reading the precise time
	// would be a large part of a hit.
	clock *otter.CoarseClock
	tags  atomic.Pointer[tagTable] // replaced, not cleared, by a flush
	// epoch is the generation: a flush increments it, and entries of an older one
	// are invalid.
	epoch atomic.Uint64
	// seq counts applied batches and flushes. An entry remembers the seq at which
	// its tags were last found valid; while seq has not moved, it needs no check.
	seq     atomic.Uint64
	cfg     L1Config
	stats   *counters
	closed  atomic.Bool
	hooks   *storeHooks
	maxSize int64
}

type l1Entry struct {
	result  *Result
	tags    []Tag
	stamp   LSN
	epoch   uint64
	expires int64 // Unix nanoseconds
	weight  uint32
	checked atomic.Uint64 // seq at which the tags were last found valid; 0: never
}

// NewL1 returns an in-process store. Zero config fields take their defaults.
func NewL1(cfg L1Config) (*L1, error) {
	return newL1(cfg, new(counters))
}

func newL1(cfg L1Config, stats *counters) (*L1, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &L1{cfg: cfg, stats: stats, maxSize: cfg.MaxBytes}
	s.tags.Store(newTagTable(cfg.MaxTags))
	s.epoch.Store(1)
	s.seq.Store(1)
	// No ExpiryCalculator: otter's per-read expiry bookkeeping would triple the
	// cost of a hit. Entries carry their deadline and Get checks it; an expired
	// entry nobody reads stays until size eviction, within MaxBytes.
	cache, err := otter.New(&otter.Options[string, *l1Entry]{
		MaximumWeight: uint64(cfg.MaxBytes),
		Weigher:       func(_ string, e *l1Entry) uint32 { return e.weight },
		OnAtomicDeletion: func(e otter.DeletionEvent[string, *l1Entry]) {
			if e.WasEvicted() {
				stats.evictions.Add(1)
			}
		},
		// Maintenance runs on the goroutine that triggers it: the store starts no
		// goroutines.
		Executor: func(fn func()) { fn() },
	})
	if err != nil {
		return nil, fmt.Errorf("querycache: L1: %w", err)
	}
	s.cache = cache
	s.clock = otter.NewCoarseClock(l1TimeResolution)
	return s, nil
}

// Get implements Store. It returns the entry's Result itself, shared and immutable.
func (s *L1) Get(_ context.Context, key string, _ LSN) (*Result, error) {
	e, ok := s.cache.GetIfPresent(key)
	if !ok || s.closed.Load() {
		return nil, nil
	}
	if expired := s.clock.NowNano() >= e.expires; expired || !s.valid(e) {
		if expired {
			s.stats.evictions.Add(1)
		} else {
			s.stats.invalidated.Add(1)
		}
		s.cache.ComputeIfPresent(key, func(old *l1Entry) (*l1Entry, otter.ComputeOp) {
			if old == e {
				return nil, otter.InvalidateOp
			}
			return old, otter.CancelOp
		})
		return nil, nil
	}
	s.stats.hitsL1.inc()
	return e.result, nil
}

// valid reports whether e is valid now. The tags are read before the epoch: a
// flush bumps the epoch before it replaces the tag table, so a reader that saw the
// new (empty) table also sees the new epoch and rejects an old entry.
func (s *L1) valid(e *l1Entry) bool {
	seq := s.seq.Load()
	if e.checked.Load() != seq {
		tags := s.tags.Load()
		for _, tag := range e.tags {
			if tags.lastInvalidated(tag) > e.stamp {
				return false
			}
		}
		// Record the seq read before the check, never a later one: an Apply that
		// finished during the check will make the next reader check again.
		e.checked.Store(seq)
	}
	return e.epoch == s.epoch.Load()
}

// Set implements Store.
func (s *L1) Set(_ context.Context, key string, e Entry) error {
	if err := e.validate(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrUnavailable
	}
	weight := int64(e.Result.Size()) + int64(len(key)) + 64
	for _, t := range e.Tags {
		weight += int64(len(t)) + 16
	}
	// An entry over a tenth of the store would evict too much for one result.
	if weight > s.maxSize/10 || weight > math.MaxUint32 {
		return ErrTooLarge
	}
	ent := &l1Entry{
		result:  e.Result,
		tags:    append([]Tag(nil), e.Tags...),
		stamp:   e.Stamp.Watermark,
		epoch:   e.Stamp.local,
		expires: s.clock.NowNano() + int64(e.TTL),
		weight:  uint32(weight),
	}
	if !s.valid(ent) {
		s.stats.staleFills.Add(1)
		return ErrStaleFill
	}
	s.hooks.beforeStore(key)
	s.cache.Set(key, ent)
	s.stats.fillsL1.Add(1)
	return nil
}

// Apply implements Store. It cannot fail but on invalid input.
func (s *L1) Apply(_ context.Context, inv Invalidation) error {
	if err := inv.validate(); err != nil {
		return err
	}
	if inv.Flush {
		s.flush()
	}
	if len(inv.Tags) > 0 {
		s.tags.Load().invalidate(inv.Tags, inv.Commit)
		s.seq.Add(1)
	}
	return nil
}

// flush starts a new generation: bump the epoch first, then replace the tag table
// (see valid), then drop the entries to free their memory.
func (s *L1) flush() {
	s.epoch.Add(1)
	s.tags.Store(newTagTable(s.cfg.MaxTags))
	s.seq.Add(1)
	s.cache.InvalidateAll()
	s.stats.flushes.Add(1)
}

// Stamp implements Store.
func (s *L1) Stamp(watermark LSN) Stamp {
	return Stamp{Watermark: watermark, local: s.epoch.Load()}
}

// Close implements Store: it drops the entries and stops the clock's goroutine.
func (s *L1) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cache.InvalidateAll()
	s.cache.StopAllGoroutines()
	s.clock.Stop()
	return nil
}

// Stats returns the store's counters.
func (s *L1) Stats() Stats { return s.stats.snapshot() }

// Len returns the number of entries held (expired ones not yet read or evicted
// included).
func (s *L1) Len() int { return s.cache.EstimatedSize() }
