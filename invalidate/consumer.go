package invalidate

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/querycache"
)

// Target is where a Consumer applies invalidations: a *querycache.Cache (its L1,
// and Redis when it has one).
type Target interface {
	Apply(ctx context.Context, inv querycache.Invalidation) error
}

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// Target receives the invalidations. Required.
	Target Target
	// Schemes gives the predicate column sets in use per relation: a *Schemes, or
	// a *SharedSchemes on the elected consumer of shared instances. Required.
	Schemes SchemeSource
	// Publisher, when set, fans every applied batch out to the other instances
	// (the leader in shared mode). A batch that cannot be published fails Apply,
	// so the change stream delivers it again: followers never miss one silently.
	Publisher *Publisher
	// OnSchemaChange is told which relations changed definition, so plans and
	// catalog facts about them are redone (querycache.Analyzer.InvalidateCatalog).
	OnSchemaChange func(rels ...querycache.Relation)
	// Visibility, when set, is asked before the watermark passes a commit: the
	// watermark then covers only transactions that new snapshots see (see
	// Visibility), and Run must run. Without it the watermark advances as soon as
	// a transaction's tags are applied, and stamps must lag it instead
	// (querycache.Config.VisibilityGrace).
	Visibility Visibility
	// MaxTagsPerRelation bounds the row tags of one relation in one transaction;
	// past it the relation is invalidated whole. default: DefaultMaxTagsPerRelation
	MaxTagsPerRelation int
	// Logger receives history losses and failures. default: slog.Default()
	Logger *slog.Logger
}

// SchemeSource gives the schemes whose row tags a relation's changes invalidate.
type SchemeSource interface {
	Of(rel querycache.Relation) []querycache.Scheme
}

// adopter is a SchemeSource whose new schemes join between two transactions.
type adopter interface {
	adopt(applied querycache.LSN)
}

// beginner is a SchemeSource that is told which transaction is being tagged.
type beginner interface {
	begin(end querycache.LSN)
}

// maxPending bounds the commits applied but not yet confirmed visible; past it
// Apply waits (the change stream then falls behind, and the cache is bypassed).
const maxPending = 1 << 16

// pendingCommit is a commit whose tags are applied, waiting for its transaction
// to be visible before the watermark passes end. xid 0: nothing to wait for.
// failed: applying its tags failed somewhere (Redis), so only the in-process
// watermark may pass it (a store that missed the tags is then behind the readers
// and refuses them); the listener delivers the transaction again.
type pendingCommit struct {
	xid    uint32
	end    querycache.LSN
	failed bool
}

// localTarget is a Target that can advance the in-process watermark alone
// (*querycache.Cache).
type localTarget interface {
	ApplyLocal(ctx context.Context, inv querycache.Invalidation) error
}

// Consumer is the change stream's consumer (a cdc.ProgressConsumer): it turns
// every committed transaction into the tags it invalidates and applies them, in
// commit order, with the watermark that makes stale fills harmless. The listener
// acknowledges a transaction only after Apply returned, so nothing is lost;
// invalidation is idempotent, so a replay is harmless.
type Consumer struct {
	cfg    ConsumerConfig
	tagger tagger
	// watermark is the highest watermark applied (and published, when there is a
	// Publisher): every commit at or below it is applied everywhere it must be,
	// and visible to new snapshots (with Visibility).
	watermark atomic.Uint64
	// applied is the end of the last transaction whose tags are applied.
	applied atomic.Uint64

	// applyMu orders what reaches the Target and the Publisher: Apply's tags and
	// the confirmer's watermarks.
	applyMu sync.Mutex

	mu      sync.Mutex
	pending []pendingCommit // in commit order
	gen     uint64          // advanced when history is lost: pending is dropped
	wake    chan struct{}   // pending grew
	drained chan struct{}   // pending shrank
}

var _ cdc.ProgressConsumer = (*Consumer)(nil)

// NewConsumer validates cfg and returns a Consumer.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if cfg.Target == nil || cfg.Schemes == nil {
		return nil, errors.New("invalidate: ConsumerConfig.Target and Schemes are required")
	}
	if cfg.MaxTagsPerRelation < 0 {
		return nil, errors.New("invalidate: ConsumerConfig.MaxTagsPerRelation is negative")
	}
	if cfg.MaxTagsPerRelation == 0 {
		cfg.MaxTagsPerRelation = DefaultMaxTagsPerRelation
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Consumer{cfg: cfg, tagger: tagger{
		schemes:        cfg.Schemes,
		maxTagsPerRel:  cfg.MaxTagsPerRelation,
		onSchemaChange: cfg.OnSchemaChange,
	}, wake: make(chan struct{}, 1), drained: make(chan struct{}, 1)}, nil
}

// Apply invalidates what tx could have changed, then advances the watermark to
// its end: at once, or with Visibility once new snapshots see tx.
func (c *Consumer) Apply(ctx context.Context, tx *cdc.Transaction) error {
	end := querycache.LSN(tx.EndLSN)
	c.adopt()
	if b, ok := c.cfg.Schemes.(beginner); ok {
		b.begin(end)
	}
	tags, ddl := c.tagger.tags(tx)
	inv := querycache.Invalidation{Flush: ddl, Tags: tags, Commit: querycache.LSN(tx.CommitLSN)}
	if c.cfg.Visibility == nil {
		inv.Watermark = end
		if err := c.apply(ctx, inv, false); err != nil {
			return err
		}
		c.setApplied(end)
		return nil
	}
	if err := c.waitRoom(ctx); err != nil {
		return err
	}
	var err error
	if len(inv.Tags) > 0 || inv.Flush {
		err = c.apply(ctx, inv, true)
	}
	c.setApplied(end)
	c.enqueue(pendingCommit{xid: tx.Xid, end: end, failed: err != nil})
	return err
}

// HistoryLost flushes everything: changes may have been missed.
func (c *Consumer) HistoryLost(ctx context.Context, reason string) error {
	c.adopt()
	c.cfg.Logger.Warn("pgcache: change history lost; flushing the cache", "reason", reason)
	if c.cfg.OnSchemaChange != nil {
		c.cfg.OnSchemaChange()
	}
	c.mu.Lock()
	c.gen++
	c.pending = nil
	c.mu.Unlock()
	return c.apply(ctx, querycache.Invalidation{Flush: true}, false)
}

// Progress advances the watermark of an idle stream.
func (c *Consumer) Progress(ctx context.Context, applied cdc.LSN) error {
	c.adopt()
	if c.cfg.Visibility == nil {
		c.setApplied(querycache.LSN(applied))
		return c.apply(ctx, querycache.Invalidation{Watermark: querycache.LSN(applied)}, false)
	}
	c.setApplied(querycache.LSN(applied))
	c.enqueue(pendingCommit{end: querycache.LSN(applied)})
	return nil
}

// adopt lets schemes registered since the last transaction join: every
// transaction from now on is tagged with them, and an entry may rely on them once
// its stamp covers every transaction tagged without them.
func (c *Consumer) adopt() {
	if a, ok := c.cfg.Schemes.(adopter); ok {
		a.adopt(querycache.LSN(c.applied.Load()))
	}
}

func (c *Consumer) setApplied(end querycache.LSN) {
	for cur := c.applied.Load(); uint64(end) > cur && !c.applied.CompareAndSwap(cur, uint64(end)); cur = c.applied.Load() {
	}
}

// apply applies inv to the Target and publishes it. pending: the tags of a commit
// whose watermark comes later.
func (c *Consumer) apply(ctx context.Context, inv querycache.Invalidation, pending bool) error {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if err := c.cfg.Target.Apply(ctx, inv); err != nil {
		return err
	}
	if c.cfg.Publisher != nil {
		b := Batch{LSN: inv.Watermark, Tags: inv.Tags, Flush: inv.Flush, Healthy: true, Pending: pending}
		if pending {
			b.LSN = inv.Commit
		}
		if b.LSN == 0 {
			b.LSN = querycache.LSN(c.watermark.Load())
		}
		if err := c.cfg.Publisher.Publish(ctx, b); err != nil {
			return err
		}
	}
	if inv.Watermark > querycache.LSN(c.watermark.Load()) {
		c.watermark.Store(uint64(inv.Watermark))
	}
	return nil
}

func (c *Consumer) enqueue(p pendingCommit) {
	c.mu.Lock()
	if n := len(c.pending); n > 0 && p.xid == 0 && c.pending[n-1].xid == 0 {
		c.pending[n-1].end = max(c.pending[n-1].end, p.end) // idle progress
	} else {
		c.pending = append(c.pending, p)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// waitRoom waits while maxPending commits wait for confirmation.
func (c *Consumer) waitRoom(ctx context.Context) error {
	for {
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		if n < maxPending {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.drained:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Confirmation pacing: checks are at least minCheckInterval apart (one query per
// check, whatever the commit rate); a commit not yet visible is asked about again
// after notVisibleWait; a failed check is retried after failedCheckWait.
const (
	minCheckInterval = 500 * time.Microsecond
	notVisibleWait   = 500 * time.Microsecond
	failedCheckWait  = 50 * time.Millisecond
)

// Run advances the watermark over applied commits as their transactions become
// visible, until ctx ends. It is needed only with Visibility; without, it returns
// at once.
func (c *Consumer) Run(ctx context.Context) error {
	if c.cfg.Visibility == nil {
		return nil
	}
	var last time.Time
	failing := false // the last check failed: said once at Warn, then at Debug
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
		}
		for {
			if wait := minCheckInterval - time.Since(last); wait > 0 {
				if !sleep(ctx, wait) {
					return ctx.Err()
				}
			}
			last = time.Now()
			more, err := c.confirm(ctx)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			switch {
			case err != nil:
				if !failing {
					c.cfg.Logger.Warn("pgcache: the watermark cannot advance until this clears (meanwhile fills are born stale and read-your-writes reads bypass the cache)", "err", err)
				} else {
					c.cfg.Logger.Debug("pgcache: watermark", "err", err)
				}
				failing = true
				if !sleep(ctx, failedCheckWait) {
					return ctx.Err()
				}
				continue
			case more:
				failing = false
				if !sleep(ctx, notVisibleWait) {
					return ctx.Err()
				}
				continue
			}
			failing = false
			break
		}
	}
}

// confirm asks which pending commits are visible and advances the watermark over
// the visible ones at the head of the queue. more reports commits left waiting.
func (c *Consumer) confirm(ctx context.Context) (more bool, err error) {
	c.mu.Lock()
	gen, batch := c.gen, slices.Clone(c.pending[:min(len(c.pending), 4096)])
	c.mu.Unlock()
	if len(batch) == 0 {
		return false, nil
	}
	var xids []uint32
	for _, p := range batch {
		if p.xid != 0 {
			xids = append(xids, p.xid)
		}
	}
	var visible []bool
	if len(xids) > 0 {
		if visible, err = c.cfg.Visibility.Visible(ctx, xids); err != nil {
			return true, err
		}
	}
	n := 0 // confirmed commits at the head
	failed := false
	for _, p := range batch {
		if p.xid != 0 {
			if !visible[0] {
				break
			}
			visible = visible[1:]
		}
		if p.failed && n > 0 {
			break // the commits before it advance everything; it, only the local watermark
		}
		n++
		if p.failed {
			failed = true
			break
		}
	}
	if n == 0 {
		return true, nil
	}
	c.applyMu.Lock()
	c.mu.Lock()
	if c.gen != gen {
		c.mu.Unlock()
		c.applyMu.Unlock()
		return false, nil // history was lost meanwhile: nothing of this batch counts
	}
	c.mu.Unlock()
	w := batch[n-1].end
	if lt, ok := c.cfg.Target.(localTarget); ok && failed {
		err = lt.ApplyLocal(ctx, querycache.Invalidation{Watermark: w})
	} else if !failed {
		err = c.cfg.Target.Apply(ctx, querycache.Invalidation{Watermark: w})
		if err == nil && c.cfg.Publisher != nil {
			err = c.cfg.Publisher.Publish(ctx, Batch{LSN: w, Healthy: true})
		}
		if err == nil && w > querycache.LSN(c.watermark.Load()) {
			c.watermark.Store(uint64(w))
		}
	}
	c.applyMu.Unlock()
	if err != nil {
		return true, err
	}
	c.mu.Lock()
	if c.gen == gen {
		c.pending = c.pending[n:]
	}
	left := len(c.pending)
	c.mu.Unlock()
	select {
	case c.drained <- struct{}{}:
	default:
	}
	return left > 0, nil
}

// sleep waits d, or reports false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Watermark returns the highest watermark applied (and published).
func (c *Consumer) Watermark() querycache.LSN { return querycache.LSN(c.watermark.Load()) }
