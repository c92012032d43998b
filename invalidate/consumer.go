package invalidate

import (
	"context"
	"errors"
	"log/slog"

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
	// Schemes is the registry of the predicate column sets in use. Required.
	Schemes *Schemes
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

// Consumer is the change stream's consumer (a cdc.ProgressConsumer): it turns
// every committed transaction into the tags it invalidates and applies them, in
// commit order, with the watermark that makes stale fills harmless. The listener
// acknowledges a transaction only after Apply returned, so nothing is lost;
// invalidation is idempotent, so a replay is harmless.
type Consumer struct {
	cfg    ConsumerConfig
	tagger tagger
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
	inv := querycache.Invalidation{
		Tags:      c.tagger.tags(tx),
		Commit:    querycache.LSN(tx.CommitLSN),
		Watermark: querycache.LSN(tx.EndLSN),
	}
	return c.apply(ctx, inv)
}

// HistoryLost flushes everything: changes may have been missed.
func (c *Consumer) HistoryLost(ctx context.Context, reason string) error {
	c.cfg.Logger.Warn("pgcache: change history lost; flushing the cache", "reason", reason)
	if c.cfg.OnSchemaChange != nil {
		c.cfg.OnSchemaChange()
	}
	return c.apply(ctx, querycache.Invalidation{Flush: true})
}

// Progress advances the watermark of an idle stream.
func (c *Consumer) Progress(ctx context.Context, applied cdc.LSN) error {
	return c.apply(ctx, querycache.Invalidation{Watermark: querycache.LSN(applied)})
}

func (c *Consumer) apply(ctx context.Context, inv querycache.Invalidation) error {
	if err := c.cfg.Target.Apply(ctx, inv); err != nil {
		return err
	}
	if c.cfg.Publisher == nil {
		return nil
	}
	return c.cfg.Publisher.Publish(ctx, Batch{LSN: inv.Watermark, Tags: inv.Tags, Flush: inv.Flush, Healthy: true})
}
