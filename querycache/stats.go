package querycache

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// Stats is a snapshot of the cache's counters, all counted since the cache (or the
// store) was created. Counting costs an atomic add; hits and misses are striped
// so that parallel readers do not contend on one cache line.
type Stats struct {
	HitsL1 uint64 // reads answered by the in-process store
	HitsL2 uint64 // reads answered by the shared store (Redis)
	Misses uint64 // cacheable reads the cache could not answer (counted by Cache)

	// Bypasses counts reads that did not use the cache, by reason: the cache's own
	// (BypassNoSource, BypassUnhealthy, BypassLagging) and whatever the driver
	// reports with Cache.CountBypass.
	Bypasses map[string]uint64

	FillsL1        uint64 // entries stored in the in-process store
	FillsL2        uint64 // entries stored in the shared store
	StaleFills     uint64 // fills rejected because an invalidation raced them
	FillsOverLimit uint64 // results not cached because of Limits (Cache.CountOverLimit)
	FillsDropped   uint64 // shared-store writes dropped because the write queue was full

	Invalidated uint64 // entries found invalid when read (and removed)
	Evictions   uint64 // in-process entries evicted for size or TTL
	Flushes     uint64 // new generations: flush events and detected losses of invalidation state

	Errors       uint64 // failed shared-store calls (of any kind, those below included)
	Timeouts     uint64 // of which: timed out
	Full         uint64 // of which: the server refused a write for lack of memory
	Corrupt      uint64 // values that did not decode (deleted)
	BreakerOpen  uint64 // shared-store calls skipped by the open circuit breaker
	BreakerTrips uint64 // times the circuit breaker opened
	L2Behind     uint64 // shared-store reads refused: it has applied less than the reader's watermark
}

// add adds o's counters to s.
func (s *Stats) add(o Stats) {
	s.HitsL1 += o.HitsL1
	s.HitsL2 += o.HitsL2
	s.Misses += o.Misses
	s.FillsL1 += o.FillsL1
	s.FillsL2 += o.FillsL2
	s.StaleFills += o.StaleFills
	s.FillsOverLimit += o.FillsOverLimit
	s.FillsDropped += o.FillsDropped
	s.Invalidated += o.Invalidated
	s.Evictions += o.Evictions
	s.Flushes += o.Flushes
	s.Errors += o.Errors
	s.Timeouts += o.Timeouts
	s.Full += o.Full
	s.Corrupt += o.Corrupt
	s.BreakerOpen += o.BreakerOpen
	s.BreakerTrips += o.BreakerTrips
	s.L2Behind += o.L2Behind
	for k, v := range o.Bypasses {
		if s.Bypasses == nil {
			s.Bypasses = make(map[string]uint64)
		}
		s.Bypasses[k] += v
	}
}

// counters is the live form of Stats.
type counters struct {
	hitsL1, hitsL2, misses                                             stripedCounter
	fillsL1, fillsL2, staleFills, fillsOverLimit, fillsDropped         atomic.Uint64
	invalidated, evictions, flushes                                    atomic.Uint64
	errors, timeouts, full, corrupt, breakerOpen, breakerTrips, behind atomic.Uint64
	bypasses                                                           bypassCounters
}

func (c *counters) snapshot() Stats {
	return Stats{
		HitsL1:         c.hitsL1.load(),
		HitsL2:         c.hitsL2.load(),
		Misses:         c.misses.load(),
		Bypasses:       c.bypasses.snapshot(),
		FillsL1:        c.fillsL1.Load(),
		FillsL2:        c.fillsL2.Load(),
		StaleFills:     c.staleFills.Load(),
		FillsOverLimit: c.fillsOverLimit.Load(),
		FillsDropped:   c.fillsDropped.Load(),
		Invalidated:    c.invalidated.Load(),
		Evictions:      c.evictions.Load(),
		Flushes:        c.flushes.Load(),
		Errors:         c.errors.Load(),
		Timeouts:       c.timeouts.Load(),
		Full:           c.full.Load(),
		Corrupt:        c.corrupt.Load(),
		BreakerOpen:    c.breakerOpen.Load(),
		BreakerTrips:   c.breakerTrips.Load(),
		L2Behind:       c.behind.Load(),
	}
}

// stripedCounter spreads increments over cache-line-padded slots picked at random
// (the runtime's per-thread generator: a few nanoseconds, no shared state), so that
// cores counting hits at the same time do not fight over one line.
type stripedCounter struct {
	slots [8]struct {
		n atomic.Uint64
		_ [56]byte
	}
}

func (c *stripedCounter) inc() { c.slots[rand.Uint32()&7].n.Add(1) }

func (c *stripedCounter) load() uint64 {
	var n uint64
	for i := range c.slots {
		n += c.slots[i].n.Load()
	}
	return n
}

// maxBypassReasons bounds the distinct reasons counted; any further reason is
// counted under BypassOther. Reasons are a closed set in practice (the analyzer's
// reason codes and the cache's own), the bound only guards against misuse.
const maxBypassReasons = 64

// bypassCounters counts bypasses by reason.
type bypassCounters struct {
	mu sync.Mutex
	m  sync.Map // string -> *atomic.Uint64
	n  int
}

func (b *bypassCounters) inc(reason string) {
	if c, ok := b.m.Load(reason); ok {
		c.(*atomic.Uint64).Add(1)
		return
	}
	b.mu.Lock()
	c, ok := b.m.Load(reason)
	if !ok {
		if b.n >= maxBypassReasons && reason != BypassOther {
			b.mu.Unlock()
			b.inc(BypassOther)
			return
		}
		c = new(atomic.Uint64)
		b.m.Store(reason, c)
		b.n++
	}
	b.mu.Unlock()
	c.(*atomic.Uint64).Add(1)
}

func (b *bypassCounters) snapshot() map[string]uint64 {
	var out map[string]uint64
	b.m.Range(func(k, v any) bool {
		if out == nil {
			out = make(map[string]uint64)
		}
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}
