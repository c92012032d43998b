package querycache

import (
	"sync"
	"time"
)

// DefaultVisibilityGrace is Config.VisibilityGrace's default.
const DefaultVisibilityGrace = 50 * time.Millisecond

// watermarkHistory remembers when the watermark reached which LSN, so that stamps
// can use the watermark of a moment ago.
//
// Why: PostgreSQL writes a commit record to the WAL (and logical decoding may send
// it on) a moment before the transaction becomes visible to new snapshots. A
// reader stamped after its invalidation was applied but whose snapshot was taken in
// that moment would read the old row under a stamp that says it is current, and
// cache it. A stamp that lags the watermark by a grace period longer than that
// moment is below the commit's LSN, so such an entry is born invalid. The cost is
// that a fill racing a recent invalidation of its own tags is not kept.
type watermarkHistory struct {
	grace time.Duration

	mu      sync.Mutex
	samples [64]watermarkSample // ring, newest at head-1
	head    int
	n       int
}

type watermarkSample struct {
	at        time.Time
	watermark LSN
}

// sampleEvery bounds the rate of samples: the ring spans at least 64 of these,
// which must exceed the grace.
const sampleEvery = 10 * time.Millisecond

// record notes that the watermark is w now.
func (h *watermarkHistory) record(now time.Time, w LSN) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n > 0 {
		last := &h.samples[(h.head+len(h.samples)-1)%len(h.samples)]
		if now.Sub(last.at) < sampleEvery {
			// Too soon for a new sample. Keeping the older, lower value is what
			// keeps stamps conservative.
			return
		}
	}
	h.samples[h.head] = watermarkSample{at: now, watermark: w}
	h.head = (h.head + 1) % len(h.samples)
	h.n = min(h.n+1, len(h.samples))
}

// reset forgets the history: the watermark moved back (a new stream).
func (h *watermarkHistory) reset(now time.Time, w LSN) {
	h.mu.Lock()
	h.n, h.head = 0, 0
	h.mu.Unlock()
	h.record(now, w)
}

// at returns a watermark the cache had at least grace before now: the newest
// sample old enough, or 0 when there is none.
func (h *watermarkHistory) at(now time.Time) LSN {
	if h.grace <= 0 {
		return ^LSN(0) // no grace: the caller takes the current watermark
	}
	cutoff := now.Add(-h.grace)
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := 1; i <= h.n; i++ {
		s := h.samples[(h.head+len(h.samples)-i)%len(h.samples)]
		if !s.at.After(cutoff) {
			return s.watermark
		}
	}
	return 0
}
