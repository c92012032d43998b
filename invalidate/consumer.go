package invalidate

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

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
	adopt(watermark querycache.LSN)
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
	// Publisher): every commit at or below it is applied everywhere it must be.
	watermark atomic.Uint64
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
	}}, nil
}

// Apply invalidates what tx could have changed, then advances the watermark to
// its end.
func (c *Consumer) Apply(ctx context.Context, tx *cdc.Transaction) error {
	c.adopt()
	tags, ddl := c.tagger.tags(tx)
	inv := querycache.Invalidation{
		Flush:     ddl,
		Tags:      tags,
		Commit:    querycache.LSN(tx.CommitLSN),
		Watermark: querycache.LSN(tx.EndLSN),
	}
	return c.apply(ctx, inv)
}

// HistoryLost flushes everything: changes may have been missed.
func (c *Consumer) HistoryLost(ctx context.Context, reason string) error {
	c.adopt()
	c.cfg.Logger.Warn("pgcache: change history lost; flushing the cache", "reason", reason)
	if c.cfg.OnSchemaChange != nil {
		c.cfg.OnSchemaChange()
	}
	return c.apply(ctx, querycache.Invalidation{Flush: true})
}

// Progress advances the watermark of an idle stream.
func (c *Consumer) Progress(ctx context.Context, applied cdc.LSN) error {
	c.adopt()
	return c.apply(ctx, querycache.Invalidation{Watermark: querycache.LSN(applied)})
}

// adopt lets schemes registered since the last transaction join: every
// transaction from now on is tagged with them.
func (c *Consumer) adopt() {
	if a, ok := c.cfg.Schemes.(adopter); ok {
		a.adopt(querycache.LSN(c.watermark.Load()))
	}
}

func (c *Consumer) apply(ctx context.Context, inv querycache.Invalidation) error {
	if err := c.cfg.Target.Apply(ctx, inv); err != nil {
		return err
	}
	if c.cfg.Publisher != nil {
		b := Batch{LSN: inv.Watermark, Tags: inv.Tags, Flush: inv.Flush, Healthy: true}
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

// Watermark returns the highest watermark applied (and published).
func (c *Consumer) Watermark() querycache.LSN { return querycache.LSN(c.watermark.Load()) }
