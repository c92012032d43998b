package driver

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/invalidate"
	"github.com/pgcache/pgcache/querycache"
)

// changeStream runs the change-stream listener that keeps one connector's cache
// current: started on the connector's first connection, stopped by Close. While it
// is not streaming and caught up, the cache is not used.
type changeStream struct {
	cfg *Config
	rp  *readPath
	log *slog.Logger

	// Exactly one of these is set: in-process only, every connector consumes its
	// own stream; shared through Redis, one elected instance consumes for all.
	localSchemes  *invalidate.Schemes
	sharedSchemes *invalidate.SharedSchemes
	shared        atomic.Pointer[invalidate.Shared]
	// redisNamespace prefixes the fan-out stream and the scheme registry.
	redisNamespace string

	once     sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
	listener atomic.Pointer[cdc.Listener]
	failure  atomic.Pointer[string] // why the stream cannot run, once it gave up

	published atomic.Pointer[map[querycache.Relation]bool]

	// health is what Health serves: the stream's health as watchHealth last
	// computed it, at most healthEvery ago.
	health atomic.Pointer[querycache.Health]
	// lastProgress is when requestProgress last asked (Unix nanoseconds).
	lastProgress atomic.Int64
}

// healthEvery is how often the stream's health is computed for the read path. A
// cached read asks on every query; a clock read there costs more than the rest
// of the check on some virtual machines, and the staleness bound (a second by
// default) does not need finer resolution.
const healthEvery = 5 * time.Millisecond

// How often the published relations are read again: tables added to a
// FOR ALL TABLES publication become cacheable this long after their creation.
const publishedRefresh = 30 * time.Second

func newChangeStream(cfg *Config, rp *readPath) *changeStream {
	s := &changeStream{cfg: cfg, rp: rp, log: cfg.Logger, done: make(chan struct{})}
	s.health.Store(&querycache.Health{})
	return s
}

// Health implements querycache.HealthSource. It is called on every cached read,
// so it serves what watchHealth computed at most healthEvery ago.
func (s *changeStream) Health() querycache.Health { return *s.health.Load() }

// watchHealth computes the stream's health every healthEvery until ctx ends,
// when the stream is no longer healthy.
func (s *changeStream) watchHealth(ctx context.Context) {
	tick := time.NewTicker(healthEvery)
	defer tick.Stop()
	for {
		h := s.currentHealth()
		s.health.Store(&h)
		if s.rp.fence.holds(s.rp.cache.Watermark()) {
			// A write of this *sql.DB is waiting for the stream to pass it; an
			// idle stream reports its position only when asked.
			s.requestProgress()
		}
		select {
		case <-ctx.Done():
			s.health.Store(&querycache.Health{})
			return
		case <-tick.C:
		}
	}
}

// currentHealth asks the listener (or the shared consumer) how it is.
func (s *changeStream) currentHealth() querycache.Health {
	var h querycache.Health
	if sh := s.shared.Load(); sh != nil {
		h = sh.Health()
	} else if l := s.listener.Load(); l != nil {
		lh := l.Health()
		h = querycache.Health{Healthy: lh.State == cdc.StateStreaming && !lh.HistoryLost, Lag: lh.LagTime}
	}
	h.Healthy = h.Healthy && s.published.Load() != nil
	return h
}

// requestProgress asks the listener consuming the stream here (if any) for a
// keepalive, so an idle stream reports its position now; at most once per
// progressEvery.
func (s *changeStream) requestProgress() {
	now := time.Now().UnixNano()
	last := s.lastProgress.Load()
	if now-last < int64(progressEvery) || !s.lastProgress.CompareAndSwap(last, now) {
		return
	}
	if sh := s.shared.Load(); sh != nil {
		sh.RequestProgress()
	} else if l := s.listener.Load(); l != nil {
		l.RequestProgress()
	}
}

// progressEvery bounds the rate of requestProgress's keepalive requests.
const progressEvery = 5 * time.Millisecond

// published reports whether a relation is in the publication, as last read.
func (s *changeStream) isPublished(r querycache.Relation) bool {
	m := s.published.Load()
	return m != nil && (*m)[r]
}

// start starts the listener once, for the connection config of the first
// connection (a registered ConnConfig is known only then).
func (s *changeStream) start(connConfig *pgx.ConnConfig) {
	s.once.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		go func() {
			defer close(s.done)
			s.run(ctx, connConfig)
		}()
	})
}

// stop stops the listener and waits for it.
func (s *changeStream) stop() {
	s.once.Do(func() { close(s.done) }) // never started
	if s.cancel != nil {
		s.cancel()
	}
	<-s.done
}

func (s *changeStream) run(ctx context.Context, connConfig *pgx.ConnConfig) {
	publication := cmp.Or(s.cfg.Publication, cdc.DefaultPublication)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.watchPublication(ctx, connConfig, publication)
	}()
	go func() {
		defer wg.Done()
		s.watchHealth(ctx)
	}()
	if s.sharedSchemes != nil {
		s.runShared(ctx, connConfig, publication)
	} else {
		s.runLocal(ctx, connConfig, publication)
	}
	wg.Wait()
}

// runLocal consumes a temporary slot of this connector's own.
func (s *changeStream) runLocal(ctx context.Context, connConfig *pgx.ConnConfig, publication string) {
	visibility := invalidate.NewPgVisibility(connConfig)
	defer visibility.Close()
	consumer, err := invalidate.NewConsumer(invalidate.ConsumerConfig{
		Target:         s.rp.cache,
		Schemes:        s.localSchemes,
		Visibility:     visibility,
		OnSchemaChange: s.rp.analyzer.InvalidateCatalog,
		Logger:         s.log,
	})
	if err != nil {
		s.giveUp(err)
		return
	}
	listener, err := cdc.NewListener(cdc.Config{
		ConnString:        connConfig.ConnString(),
		Publication:       publication,
		CreatePublication: true,
		Slot:              "pgcache_" + randomSuffix(),
		Temporary:         true,
		Logger:            s.log,
	}, consumer)
	if err != nil {
		s.giveUp(err)
		return
	}
	s.listener.Store(listener)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	confirmed := make(chan struct{})
	go func() {
		defer close(confirmed)
		_ = consumer.Run(ctx)
	}()
	err = listener.Run(ctx)
	if ctx.Err() == nil && err != nil {
		s.giveUp(err)
	}
	cancel()
	<-confirmed
}

// runShared follows the shared fan-out and campaigns to consume the persistent
// slot for every instance.
func (s *changeStream) runShared(ctx context.Context, connConfig *pgx.ConnConfig, publication string) {
	sh, err := invalidate.NewShared(invalidate.SharedConfig{
		ConnConfig: connConfig,
		Listener: cdc.Config{
			Publication:       publication,
			CreatePublication: true,
			Slot:              cmp.Or(s.cfg.Slot, cdc.SlotFor(connConfig.Database)),
		},
		Cache:          s.rp.cache,
		Fanout:         invalidate.FanoutConfig{Client: s.rp.redis, Stream: s.redisNamespace + ":invalidations"},
		Schemes:        s.sharedSchemes,
		FollowOnly:     s.cfg.Follower,
		MaxLag:         s.cfg.MaxLag,
		OnSchemaChange: s.rp.analyzer.InvalidateCatalog,
		Logger:         s.log,
	})
	if err != nil {
		s.giveUp(err)
		return
	}
	s.shared.Store(sh)
	_ = sh.Run(ctx)
}

// ready reports whether the stream has started: the listener streams (in-process
// mode) or a leader's batches arrive (shared mode). The publication exists then.
func (s *changeStream) ready() bool {
	if sh := s.shared.Load(); sh != nil {
		return sh.Health().Healthy
	}
	l := s.listener.Load()
	return l != nil && l.Health().State == cdc.StateStreaming
}

// giveUp leaves the connector pass-through, saying once what to change.
func (s *changeStream) giveUp(err error) {
	msg := err.Error()
	s.failure.Store(&msg)
	s.log.Warn("pgcache: the change stream cannot run, so nothing is cached (queries go to PostgreSQL unchanged)", "reason", msg)
}

// watchPublication keeps the set of published relations current; statements
// reading other relations are not cached, since their changes never arrive. The
// cache is not used before the set is first loaded, once the listener streams (it
// may have created the publication).
func (s *changeStream) watchPublication(ctx context.Context, connConfig *pgx.ConnConfig, publication string) {
	wait := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if !s.ready() {
			continue
		}
		if err := s.loadPublished(ctx, connConfig, publication); err != nil {
			if ctx.Err() == nil {
				s.log.Debug("pgcache: read the publication's tables", "err", err)
			}
			wait = min(2*wait, publishedRefresh)
			continue
		}
		wait = publishedRefresh
	}
}

func (s *changeStream) loadPublished(ctx context.Context, connConfig *pgx.ConnConfig, publication string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1`, publication)
	if err != nil {
		return err
	}
	set := make(map[querycache.Relation]bool)
	for rows.Next() {
		var r querycache.Relation
		if err := rows.Scan(&r.Schema, &r.Name); err != nil {
			return err
		}
		set[r] = true
	}
	if err := rows.Err(); err != nil {
		return err
	}
	old := s.published.Load()
	if old != nil && maps.Equal(*old, set) {
		return nil
	}
	if old != nil {
		for r := range *old {
			if !set[r] {
				// A relation left the publication: its changes no longer arrive,
				// so what is cached of it can no longer be kept current.
				s.log.Warn("pgcache: a relation left the publication; flushing the cache", "relation", r.String())
				if err := s.rp.cache.Apply(ctx, querycache.Invalidation{Flush: true}); err != nil {
					return fmt.Errorf("flush: %w", err)
				}
				break
			}
		}
	}
	s.published.Store(&set)
	s.rp.analyzer.InvalidateCatalog() // plans refused as unpublished are redone
	return nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%d_%s", os.Getpid(), hex.EncodeToString(b))
}
