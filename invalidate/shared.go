package invalidate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/querycache"
)

// SharedConfig configures one instance of a cache shared through Redis: it follows
// the fan-out (every instance), and campaigns to be the one consumer of the change
// stream (unless Follow).
type SharedConfig struct {
	// ConnConfig reaches the database, for the election and the listener. Required.
	ConnConfig *pgx.ConnConfig
	// Listener configures the change stream the leader consumes. ConnString is
	// filled from ConnConfig; Temporary must be false (the slot outlives leaders).
	Listener cdc.Config
	// Cache is this instance's cache, with Redis. Required.
	Cache *querycache.Cache
	// Fanout is the stream carrying invalidations to every instance. Required
	// (Client at least).
	Fanout FanoutConfig
	// Schemes is the shared scheme registry. Required.
	Schemes *SharedSchemes
	// Follow only: never lead (an instance that must not consume).
	FollowOnly bool
	// LeadOnly: do not follow the fan-out (a standalone invalidator with no
	// in-process cache of its own).
	LeadOnly bool
	// Heartbeat is how often the leader publishes its watermark when idle.
	// default: 200ms
	Heartbeat time.Duration
	// MaxLag is the leader's staleness bound: beyond it, it tells followers it is
	// unhealthy. default: 1s
	MaxLag time.Duration
	// ElectionInterval is the Elector's Interval. default: 1s
	ElectionInterval time.Duration
	// OnSchemaChange is told which relations changed definition.
	OnSchemaChange func(rels ...querycache.Relation)
	// Logger. default: slog.Default()
	Logger *slog.Logger
}

// Shared runs one instance of a shared cache. Health tells whether its cache may be
// used: while it receives the leader's batches and heartbeats in order, and the
// leader says it is current.
type Shared struct {
	cfg     SharedConfig
	elector *Elector

	lastBatch atomic.Int64 // unix nanos when the last batch was applied, 0 while lost
	leaderOK  atomic.Bool  // the last batch said the leader's stream was healthy
	listener  atomic.Pointer[cdc.Listener]
	errors    atomic.Uint64 // failed reads of the fan-out and failed heartbeats
}

// Errors counts the failures of this instance's shared-cache machinery that did
// not reach the application: fan-out reads and heartbeats that failed (Redis down,
// refusing, unreachable).
func (s *Shared) Errors() uint64 { return s.errors.Load() }

// NewShared validates cfg.
func NewShared(cfg SharedConfig) (*Shared, error) {
	if cfg.ConnConfig == nil || cfg.Cache == nil || cfg.Schemes == nil {
		return nil, errors.New("invalidate: SharedConfig.ConnConfig, Cache and Schemes are required")
	}
	if err := cfg.Fanout.fill(); err != nil {
		return nil, err
	}
	if cfg.Listener.Temporary {
		return nil, errors.New("invalidate: a shared cache's listener needs a persistent slot (Listener.Temporary false)")
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 200 * time.Millisecond
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Listener.ConnString = cfg.ConnConfig.ConnString()
	cfg.Listener.Logger = cfg.Logger
	if cfg.Listener.Slot == "" {
		cfg.Listener.Slot = cdc.SlotFor(cfg.ConnConfig.Database)
	}
	name := cfg.Listener.Slot
	s := &Shared{cfg: cfg}
	if !cfg.FollowOnly {
		e, err := NewElector(ElectorConfig{ConnConfig: cfg.ConnConfig, Name: name, Interval: cfg.ElectionInterval, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		s.elector = e
	}
	return s, nil
}

// IsLeader reports whether this instance consumes the change stream now.
func (s *Shared) IsLeader() bool { return s.elector != nil && s.elector.IsLeader() }

// Health implements querycache.HealthSource for this instance's cache.
func (s *Shared) Health() querycache.Health {
	last := s.lastBatch.Load()
	if last == 0 {
		return querycache.Health{}
	}
	age := time.Duration(time.Now().UnixNano() - last)
	// Healthy while batches arrive at least every few heartbeats and the leader
	// says its stream is current; Lag is how long ago the last one arrived.
	return querycache.Health{Healthy: s.leaderOK.Load() && age < 5*s.cfg.Heartbeat+s.cfg.MaxLag, Lag: age}
}

// RequestProgress asks the change stream to report progress at once, when this
// instance leads (see cdc.Listener.RequestProgress).
func (s *Shared) RequestProgress() {
	if l := s.listener.Load(); l != nil {
		l.RequestProgress()
	}
}

// LeaderHealth returns the leader's listener health, when this instance leads.
func (s *Shared) LeaderHealth() (cdc.Health, bool) {
	if l := s.listener.Load(); l != nil && s.IsLeader() {
		return l.Health(), true
	}
	return cdc.Health{}, false
}

// Run follows the fan-out and campaigns for leadership until ctx is done.
func (s *Shared) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	run := func(f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("pgcache: shared cache", "err", err)
			}
		}()
	}
	run(func(ctx context.Context) error { return s.cfg.Schemes.Run(ctx, s.IsLeader) })
	if !s.cfg.LeadOnly {
		run(func(ctx context.Context) error { return Follow(ctx, s.cfg.Fanout, (*follower)(s)) })
	}
	if s.elector != nil {
		run(func(ctx context.Context) error { return s.elector.Run(ctx, s.lead) })
	}
	wg.Wait()
	return ctx.Err()
}

// lead is one term as the consumer: the listener on the persistent slot, its
// consumer applying to Redis and publishing, and the heartbeat.
func (s *Shared) lead(ctx context.Context) error {
	if err := s.cfg.Schemes.adoptAll(ctx); err != nil {
		return fmt.Errorf("load the scheme registry: %w", err)
	}
	pub, err := NewPublisher(ctx, s.cfg.Fanout)
	if err != nil {
		return err
	}
	visibility := NewPgVisibility(s.cfg.ConnConfig)
	defer visibility.Close()
	consumer, err := NewConsumer(ConsumerConfig{
		Target:         s.cfg.Cache,
		Schemes:        s.cfg.Schemes,
		Publisher:      pub,
		Visibility:     visibility,
		OnSchemaChange: s.cfg.OnSchemaChange,
		Logger:         s.cfg.Logger,
	})
	if err != nil {
		return err
	}
	listener, err := cdc.NewListener(s.cfg.Listener, consumer)
	if err != nil {
		return err
	}
	s.listener.Store(listener)
	defer s.listener.Store(nil)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.heartbeat(ctx, pub, listener, consumer)
	}()
	go func() {
		defer wg.Done()
		_ = consumer.Run(ctx)
	}()
	err = listener.Run(ctx)
	cancel()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// heartbeat publishes the consumer's watermark and the stream's health, so that
// followers know the leader is alive and how current it is even when nothing
// changes.
func (s *Shared) heartbeat(ctx context.Context, pub *Publisher, l *cdc.Listener, c *Consumer) {
	tick := time.NewTicker(s.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h := l.Health()
		healthy := h.State == cdc.StateStreaming && !h.HistoryLost && h.LagTime <= s.cfg.MaxLag
		if err := pub.Publish(ctx, Batch{LSN: c.Watermark(), Healthy: healthy}); err != nil && ctx.Err() == nil {
			s.errors.Add(1)
			s.cfg.Logger.Debug("pgcache: heartbeat", "err", err)
		}
	}
}

// follower applies the fan-out to this instance's in-process cache.
type follower Shared

func (f *follower) Apply(ctx context.Context, b Batch) error {
	inv := querycache.Invalidation{Flush: b.Flush, Watermark: b.LSN}
	if b.Pending {
		inv.Watermark = 0
	}
	if len(b.Tags) > 0 {
		inv.Tags, inv.Commit = b.Tags, b.LSN
	}
	if err := f.cfg.Cache.ApplyLocal(ctx, inv); err != nil {
		return err
	}
	f.leaderOK.Store(b.Healthy)
	f.lastBatch.Store(time.Now().UnixNano())
	return nil
}

// Failed counts a failed read of the fan-out.
func (f *follower) Failed(string) { f.errors.Add(1) }

func (f *follower) Lost(ctx context.Context, reason string) error {
	f.lastBatch.Store(0)
	f.cfg.Logger.Warn("pgcache: invalidations from the shared stream may be missing; flushing the in-process cache", "reason", reason)
	return f.cfg.Cache.ApplyLocal(ctx, querycache.Invalidation{Flush: true})
}
