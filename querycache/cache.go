package querycache

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cache is what the driver talks to: it looks results up, stores fills, takes
// invalidations from the change stream, and says whether it may be used at all.
//
// The read path of a cacheable query, in the driver:
//
//	if ok, why := c.Usable(); !ok {
//		c.CountBypass(why) // and run the query on PostgreSQL
//	}
//	if res, hit := c.Lookup(ctx, key); hit {
//		return res.Rows() // replayed, exactly as pgx's stdlib gave it
//	}
//	stamp := c.Stamp()           // BEFORE the database read
//	rows := run the query        // stream to the caller, feeding c.NewResultBuilder(cols)
//	c.Store(ctx, key, result, tags, stamp, ttl) // after the last row, if complete and within limits
//
// Invalidations arrive through Apply (the change-stream consumer) or ApplyLocal
// (an instance receiving the consumer's fan-out).
type Cache struct {
	store     Store
	tiered    *Tiered // nil without Redis
	stats     *counters
	health    HealthSource
	cfg       Config
	watermark atomic.Uint64
	history   watermarkHistory
	closed    atomic.Bool
}

// Health is what the invalidation source reports about itself.
type Health struct {
	// Healthy is false while invalidations may be missing: the listener is down,
	// reconnecting, or lost its fan-out.
	Healthy bool
	// Lag is how far behind the database the applied invalidations are.
	Lag time.Duration
}

// HealthSource reports the invalidation source's health. Health is called on every
// cache read and must be cheap and non-blocking (an atomic load).
type HealthSource interface {
	Health() Health
}

// HealthFunc adapts a function to HealthSource.
type HealthFunc func() Health

// Health implements HealthSource.
func (f HealthFunc) Health() Health { return f() }

// Bypass reasons of the cache itself. The driver counts its own reasons (the
// query plan's) with CountBypass.
const (
	BypassNoSource  = "no-invalidation-source" // Config.Health is nil: nothing may be cached
	BypassUnhealthy = "invalidation-unhealthy" // the source says invalidations may be missing
	BypassLagging   = "invalidation-lagging"   // the source is further behind than MaxLag
	BypassClosed    = "cache-closed"
	BypassOther     = "other" // reasons beyond the first 64 distinct ones
)

// Config configures a Cache. The zero Config is valid: an in-process cache that is
// never used (no invalidation source), which is the drop-in default.
type Config struct {
	// L1 configures the in-process store.
	L1 L1Config
	// Redis, when not nil, adds the shared store behind L1. It must be created with
	// ContextTimeoutEnabled: true. The Cache does not close it.
	Redis redis.UniversalClient
	// RedisConfig configures the shared store.
	RedisConfig RedisConfig
	// Tiered configures how L1 and Redis work together.
	Tiered TieredConfig
	// Health is the invalidation source the cache is gated by. nil: the cache is
	// never used, every read goes to PostgreSQL. default: nil
	Health HealthSource
	// MaxLag is the staleness bound: while the source lags more, reads bypass the
	// cache. default: 5s
	MaxLag time.Duration
	// DefaultTTL is the TTL of an entry when Store is given none. default: 5m
	DefaultTTL time.Duration
	// MaxTTL caps every entry's TTL. default: 1h
	MaxTTL time.Duration
	// Limits bound the size of one entry (see NewResultBuilder).
	Limits Limits
	// VisibilityGrace is how far stamps lag the watermark: longer than a committed
	// transaction takes to become visible to new snapshots after its commit record
	// was decoded (see watermarkHistory). Negative disables it: for a watermark
	// that only covers commits known to be visible (invalidate.Visibility, which the
	// driver uses), and for tests that drive stamps by hand. default: 50ms
	VisibilityGrace time.Duration
}

// Cache defaults.
const (
	DefaultMaxLag = 5 * time.Second
	DefaultTTL    = 5 * time.Minute
	DefaultMaxTTL = time.Hour
)

func (c Config) withDefaults() Config {
	if c.MaxLag == 0 {
		c.MaxLag = DefaultMaxLag
	}
	if c.DefaultTTL == 0 {
		c.DefaultTTL = DefaultTTL
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.VisibilityGrace == 0 {
		c.VisibilityGrace = DefaultVisibilityGrace
	}
	c.Limits = c.Limits.withDefaults()
	c.L1 = c.L1.withDefaults()
	c.RedisConfig = c.RedisConfig.withDefaults()
	return c
}

// validate checks a Config with its defaults applied (a negative value stays
// negative and fails here).
func (c Config) validate() error {
	if c.MaxLag < 0 || c.DefaultTTL < 0 || c.MaxTTL < 0 {
		return errors.New("querycache: negative duration in Config")
	}
	if c.DefaultTTL > c.MaxTTL {
		return fmt.Errorf("querycache: DefaultTTL %v above MaxTTL %v", c.DefaultTTL, c.MaxTTL)
	}
	if err := c.L1.validate(); err != nil {
		return err
	}
	if err := c.RedisConfig.validate(); err != nil {
		return err
	}
	return c.Limits.validate()
}

// New returns a Cache.
func New(cfg Config) (*Cache, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	stats := new(counters)
	l1, err := newL1(cfg.L1, stats)
	if err != nil {
		return nil, err
	}
	c := &Cache{store: l1, stats: stats, health: cfg.Health, cfg: cfg}
	c.history.grace = cfg.VisibilityGrace
	if cfg.Redis != nil {
		l2, err := newRedis(cfg.Redis, cfg.RedisConfig, stats)
		if err != nil {
			_ = l1.Close()
			return nil, err
		}
		c.tiered, err = newTiered(l1, l2, cfg.Tiered, stats)
		if err != nil {
			_ = l1.Close()
			return nil, err
		}
		c.store = c.tiered
	}
	return c, nil
}

// Usable reports whether the cache may be used now, and if not, why (a Bypass
// reason). It counts nothing: the caller counts the bypass (CountBypass).
func (c *Cache) Usable() (bool, string) {
	if c.closed.Load() {
		return false, BypassClosed
	}
	if c.health == nil {
		return false, BypassNoSource
	}
	h := c.health.Health()
	if !h.Healthy {
		return false, BypassUnhealthy
	}
	if h.Lag > c.cfg.MaxLag {
		return false, BypassLagging
	}
	return true, ""
}

// CountBypass counts a read that did not use the cache, by reason.
func (c *Cache) CountBypass(reason string) { c.stats.bypasses.inc(reason) }

// CountOverLimit counts a result not cached because it was over Limits.
func (c *Cache) CountOverLimit() { c.stats.fillsOverLimit.Add(1) }

// Lookup returns the cached result of key, if there is a valid one. It checks
// Usable again (counting a bypass when the answer changed since the caller asked)
// and never fails: store errors are counted and read as misses.
func (c *Cache) Lookup(ctx context.Context, key string) (*Result, bool) {
	if ok, why := c.Usable(); !ok {
		c.stats.bypasses.inc(why)
		return nil, false
	}
	res, _ := c.store.Get(ctx, key, LSN(c.watermark.Load()))
	if res == nil {
		c.stats.misses.inc()
		return nil, false
	}
	return res, true
}

// Stamp returns the stamp for a database read about to start. Take it before the
// read (before sending the query), never after.
func (c *Cache) Stamp() Stamp {
	w := min(LSN(c.watermark.Load()), c.history.at(time.Now()))
	return c.store.Stamp(w)
}

// Store stores a fill: the complete result of key, depending on tags, read after
// stamp was taken. ttl 0 means DefaultTTL; any ttl is capped at MaxTTL. Fills while
// the cache is not usable are dropped. The error is for logs and tests: a fill that
// is not stored only costs a later miss.
func (c *Cache) Store(ctx context.Context, key string, res *Result, tags []Tag, stamp Stamp, ttl time.Duration) error {
	if ok, why := c.Usable(); !ok {
		return fmt.Errorf("querycache: fill dropped: %s", why)
	}
	if res == nil {
		return errors.New("querycache: nil result")
	}
	if res.Size() > c.cfg.Limits.MaxBytes || res.NumRows() > c.cfg.Limits.MaxRows {
		c.stats.fillsOverLimit.Add(1)
		return ErrOverLimit
	}
	if ttl <= 0 {
		ttl = c.cfg.DefaultTTL
	}
	ttl = min(ttl, c.cfg.MaxTTL)
	return c.store.Set(ctx, key, Entry{Result: res, Tags: tags, Stamp: stamp, TTL: ttl})
}

// NewResultBuilder starts collecting a result with the Cache's Limits.
func (c *Cache) NewResultBuilder(columns []Column) *ResultBuilder {
	return NewResultBuilder(columns, c.cfg.Limits)
}

// Apply applies one input from the change stream to every store (Redis first),
// then advances the watermark.
//
// An error means Redis could not apply it (the in-process store always does). The
// caller may go on with the stream, and should log the error, but must not
// acknowledge the batch's LSN to PostgreSQL yet: once a later Apply returns nil,
// everything up to that later batch is taken care of (the Redis store starts a new
// generation before it applies anything after a failure) and acknowledging up to it
// is safe. Meanwhile Redis answers no reader whose watermark is past what it
// applied. A process that dies in between leaves the acknowledged LSN before the
// failed batch, which is then delivered again.
func (c *Cache) Apply(ctx context.Context, inv Invalidation) error {
	if err := inv.validate(); err != nil {
		return err
	}
	err := c.store.Apply(ctx, inv)
	c.advance(inv)
	return err
}

// ApplyLocal is Apply for the in-process store only: for instances that receive
// invalidations the consumer instance has already applied to Redis (the fan-out
// must publish only what it applied to Redis, and after it did).
func (c *Cache) ApplyLocal(ctx context.Context, inv Invalidation) error {
	if err := inv.validate(); err != nil {
		return err
	}
	var err error
	if c.tiered != nil {
		err = c.tiered.ApplyLocal(ctx, inv)
	} else {
		err = c.store.Apply(ctx, inv)
	}
	c.advance(inv)
	return err
}

func (c *Cache) advance(inv Invalidation) {
	if inv.Watermark == 0 {
		return
	}
	if inv.Flush {
		c.watermark.Store(uint64(inv.Watermark))
		c.history.reset(time.Now(), inv.Watermark)
		return
	}
	for {
		cur := c.watermark.Load()
		if uint64(inv.Watermark) <= cur {
			return
		}
		if c.watermark.CompareAndSwap(cur, uint64(inv.Watermark)) {
			c.history.record(time.Now(), inv.Watermark)
			return
		}
	}
}

// Watermark returns the highest commit LSN whose invalidations are fully applied
// here.
func (c *Cache) Watermark() LSN { return LSN(c.watermark.Load()) }

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats { return c.stats.snapshot() }

// Close stops the cache's goroutine and drops the in-process entries. It does not
// close the Redis client.
func (c *Cache) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	return c.store.Close()
}
