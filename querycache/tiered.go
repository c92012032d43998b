package querycache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// TieredConfig configures a Tiered store.
type TieredConfig struct {
	// WriteQueue is how many fills may wait to be written to the shared store. Fills
	// are written by one goroutine so that a miss does not wait for Redis; a fill
	// finding the queue full is not written there (counted as FillsDropped). A
	// negative value writes synchronously, in Set. default: 1024
	WriteQueue int
}

// DefaultTieredWriteQueue is the default TieredConfig.WriteQueue.
const DefaultTieredWriteQueue = 1024

func (c TieredConfig) withDefaults() TieredConfig {
	if c.WriteQueue == 0 {
		c.WriteQueue = DefaultTieredWriteQueue
	}
	return c
}

// Tiered is the in-process store in front of the shared one. A read tries L1, then
// Redis, and copies a Redis hit into L1 with the entry's own stamp and tags, so the
// copy is exactly as valid as the original. A fill goes to both. Invalidations are
// applied to Redis first (other instances read it), then to L1.
type Tiered struct {
	l1    *L1
	l2    *Redis
	stats *counters
	hooks *storeHooks

	queue   chan pendingWrite // nil: synchronous writes
	stop    chan struct{}
	done    chan struct{}
	ctx     context.Context // of the writer: cancelled by Close
	cancel  context.CancelFunc
	pending atomic.Int64 // fills queued or being written
	once    sync.Once
}

type pendingWrite struct {
	key   string
	entry Entry
}

// NewTiered returns l1 in front of l2. The Tiered store owns both: its Close closes
// them.
func NewTiered(l1 *L1, l2 *Redis, cfg TieredConfig) (*Tiered, error) {
	return newTiered(l1, l2, cfg, new(counters))
}

func newTiered(l1 *L1, l2 *Redis, cfg TieredConfig, stats *counters) (*Tiered, error) {
	if l1 == nil || l2 == nil {
		return nil, errors.New("querycache: Tiered needs both stores")
	}
	cfg = cfg.withDefaults()
	t := &Tiered{l1: l1, l2: l2, stats: stats, stop: make(chan struct{}), done: make(chan struct{})}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if cfg.WriteQueue > 0 {
		t.queue = make(chan pendingWrite, cfg.WriteQueue)
		go t.writer()
	} else {
		close(t.done)
	}
	return t, nil
}

// writer writes queued fills to the shared store until Close.
func (t *Tiered) writer() {
	defer close(t.done)
	for {
		select {
		case <-t.stop:
			return
		case w := <-t.queue:
			_ = t.l2.Set(t.ctx, w.key, w.entry) // failures are counted by the store
			t.pending.Add(-1)
		}
	}
}

// Get implements Store.
func (t *Tiered) Get(ctx context.Context, key string, watermark LSN) (*Result, error) {
	if r, _ := t.l1.Get(ctx, key, watermark); r != nil {
		return r, nil
	}
	// The L1 generation before the L2 read: a local flush during the read must
	// keep the copy out of L1.
	local := t.l1.epoch.Load()
	e, err := t.l2.getEntry(ctx, key, watermark)
	if e == nil {
		return nil, err
	}
	t.hooks.afterL2Read(key)
	if e.ttl > 0 {
		err := t.l1.Set(ctx, key, Entry{
			Result: e.result,
			Tags:   e.tags,
			Stamp:  Stamp{Watermark: e.stamp, local: local},
			TTL:    e.ttl,
		})
		if errors.Is(err, ErrStaleFill) {
			// This process knows of an invalidation (or a flush) the Redis answer
			// does not reflect yet: believe the more careful one.
			return nil, nil
		}
	}
	return e.result, nil
}

// Set implements Store. The shared-store write is queued unless configured
// synchronous; its failures are counted, not returned.
func (t *Tiered) Set(ctx context.Context, key string, e Entry) error {
	if err := t.l1.Set(ctx, key, e); errors.Is(err, ErrStaleFill) || errors.Is(err, ErrUnavailable) {
		return err
	}
	if t.queue == nil {
		return t.l2.Set(ctx, key, e)
	}
	e.Tags = append([]Tag(nil), e.Tags...) // the caller may reuse its slice once Set returns
	t.pending.Add(1)
	select {
	case t.queue <- pendingWrite{key, e}:
		return nil
	default:
		t.pending.Add(-1)
		t.stats.fillsDropped.Add(1)
		return fmt.Errorf("querycache: shared-store write queue full; %q not written to Redis", key)
	}
}

// Apply implements Store: Redis first, then L1, which is applied even when Redis
// fails (the Redis store then refuses to answer readers ahead of it; see Redis).
func (t *Tiered) Apply(ctx context.Context, inv Invalidation) error {
	err2 := t.l2.Apply(ctx, inv)
	err1 := t.l1.Apply(ctx, inv)
	return errors.Join(err1, err2)
}

// ApplyLocal applies an invalidation to L1 only: for an instance that receives
// invalidations the consumer instance already applied to Redis (the fan-out).
func (t *Tiered) ApplyLocal(ctx context.Context, inv Invalidation) error {
	return t.l1.Apply(ctx, inv)
}

// Stamp implements Store.
func (t *Tiered) Stamp(watermark LSN) Stamp {
	return Stamp{Watermark: watermark, local: t.l1.epoch.Load(), shared: t.l2.epoch.Load()}
}

// Close implements Store: it stops the writer (queued fills are dropped) and
// closes both stores.
func (t *Tiered) Close() error {
	t.once.Do(func() {
		close(t.stop)
		t.cancel()
		<-t.done
		_ = t.l1.Close()
		_ = t.l2.Close()
	})
	return nil
}

// Stats returns the counters of both stores and the Tiered store's own.
func (t *Tiered) Stats() Stats {
	var s Stats
	seen := map[*counters]bool{}
	for _, c := range []*counters{t.stats, t.l1.stats, t.l2.stats} {
		if !seen[c] {
			seen[c] = true
			s.add(c.snapshot())
		}
	}
	return s
}
