package querycache

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// switchableHealth is a HealthSource a test can change.
type switchableHealth struct{ h atomic.Pointer[Health] }

func (s *switchableHealth) set(h Health)   { s.h.Store(&h) }
func (s *switchableHealth) Health() Health { return *s.h.Load() }

// newTestCache is New for tests, which drive stamps by hand: without a visibility
// grace unless cfg sets one.
func newTestCache(t *testing.T, cfg Config) *Cache {
	t.Helper()
	if cfg.VisibilityGrace == 0 {
		cfg.VisibilityGrace = -1
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestVisibilityGraceDefault: without a setting, stamps lag the watermark by
// DefaultVisibilityGrace, so a fill stamped right after an invalidation of its tags
// is born invalid.
func TestVisibilityGraceDefault(t *testing.T) {
	c, err := New(Config{Health: healthy})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.cfg.VisibilityGrace != DefaultVisibilityGrace {
		t.Fatalf("grace %v", c.cfg.VisibilityGrace)
	}
	ctx := context.Background()
	if err := c.Apply(ctx, Invalidation{Tags: []Tag{"t"}, Commit: 10, Watermark: 10}); err != nil {
		t.Fatal(err)
	}
	if st := c.Stamp(); st.Watermark >= 10 {
		t.Fatalf("stamp %d taken at once covers the commit at 10", st.Watermark)
	}
}

func TestCacheDefaultIsPassThrough(t *testing.T) {
	c := newTestCache(t, Config{})
	if ok, why := c.Usable(); ok || why != BypassNoSource {
		t.Fatalf("Usable() = %v, %q", ok, why)
	}
	if err := c.Store(context.Background(), "k", versionResult(1), []Tag{"a"}, c.Stamp(), 0); err == nil {
		t.Fatal("fill accepted without an invalidation source")
	}
	if _, hit := c.Lookup(context.Background(), "k"); hit {
		t.Fatal("hit without an invalidation source")
	}
	if s := c.Stats(); s.Bypasses[BypassNoSource] != 1 || s.Misses != 0 || s.FillsL1 != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestCacheGatedByHealth(t *testing.T) {
	health := new(switchableHealth)
	health.set(Health{Healthy: true})
	c := newTestCache(t, Config{Health: health, MaxLag: time.Second})
	ctx := context.Background()
	if err := c.Apply(ctx, Invalidation{Watermark: 10}); err != nil {
		t.Fatal(err)
	}
	if _, hit := c.Lookup(ctx, "k"); hit {
		t.Fatal("hit in an empty cache")
	}
	if err := c.Store(ctx, "k", versionResult(1), []Tag{"a"}, c.Stamp(), 0); err != nil {
		t.Fatal(err)
	}
	if res, hit := c.Lookup(ctx, "k"); !hit || res.Value(0, 0) != int64(1) {
		t.Fatal("no hit after the fill")
	}
	for _, tc := range []struct {
		h   Health
		why string
	}{
		{Health{Healthy: false}, BypassUnhealthy},
		{Health{Healthy: true, Lag: 2 * time.Second}, BypassLagging},
	} {
		health.set(tc.h)
		if ok, why := c.Usable(); ok || why != tc.why {
			t.Fatalf("%+v: Usable() = %v, %q", tc.h, ok, why)
		}
		if _, hit := c.Lookup(ctx, "k"); hit {
			t.Fatalf("%+v: hit while unusable", tc.h)
		}
	}
	health.set(Health{Healthy: true, Lag: time.Second})
	if _, hit := c.Lookup(ctx, "k"); !hit {
		t.Fatal("no hit once healthy again, within MaxLag")
	}
	c.CountBypass("in-transaction")
	s := c.Stats()
	if s.HitsL1 != 2 || s.Misses != 1 || s.FillsL1 != 1 ||
		s.Bypasses[BypassUnhealthy] != 1 || s.Bypasses[BypassLagging] != 1 || s.Bypasses["in-transaction"] != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestCacheTTL(t *testing.T) {
	c := newTestCache(t, Config{Health: healthy, DefaultTTL: time.Minute, MaxTTL: 10 * time.Minute})
	ctx := context.Background()
	ttlOf := func(key string) time.Duration {
		ent, ok := c.store.(*L1).cache.GetIfPresent(key)
		if !ok {
			t.Fatalf("%s not stored", key)
		}
		return time.Until(time.Unix(0, ent.expires)).Round(time.Second)
	}
	for key, tc := range map[string]struct{ give, want time.Duration }{
		"default": {0, time.Minute},
		"own":     {30 * time.Second, 30 * time.Second},
		"capped":  {time.Hour, 10 * time.Minute},
	} {
		if err := c.Store(ctx, key, versionResult(1), nil, c.Stamp(), tc.give); err != nil {
			t.Fatal(err)
		}
		if got := ttlOf(key); got != tc.want {
			t.Errorf("%s: TTL %v, want %v", key, got, tc.want)
		}
	}
}

func TestCacheLimits(t *testing.T) {
	c := newTestCache(t, Config{Health: healthy, Limits: Limits{MaxRows: 1}})
	b := c.NewResultBuilder([]Column{{Name: "v"}})
	if err := b.Add([]driver.Value{int64(1)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Add([]driver.Value{int64(2)}); !errors.Is(err, ErrOverLimit) {
		t.Fatalf("second row with MaxRows 1: %v", err)
	}
	c.CountOverLimit()
	if c.Stats().FillsOverLimit != 1 {
		t.Fatal("over-limit fill not counted")
	}
}

func TestCacheWatermark(t *testing.T) {
	c := newTestCache(t, Config{Health: healthy})
	ctx := context.Background()
	steps := []struct {
		inv  Invalidation
		want LSN
	}{
		{Invalidation{Tags: []Tag{"a"}, Commit: 5}, 0}, // tags alone do not move it
		{Invalidation{Watermark: 10}, 10},
		{Invalidation{Watermark: 7}, 10}, // replays do not move it back
		{Invalidation{Tags: []Tag{"a"}, Commit: 20, Watermark: 20}, 20},
		{Invalidation{Flush: true, Watermark: 3}, 3}, // a new stream after a flush does
	}
	for i, s := range steps {
		if err := c.Apply(ctx, s.inv); err != nil {
			t.Fatal(err)
		}
		if got := c.Watermark(); got != s.want {
			t.Fatalf("step %d: watermark %d, want %d", i, got, s.want)
		}
		if c.Stamp().Watermark != s.want {
			t.Fatalf("step %d: stamp not at the watermark", i)
		}
	}
	if err := c.Apply(ctx, Invalidation{Tags: []Tag{"a"}}); err == nil {
		t.Fatal("tags without a commit LSN accepted")
	}
}

func TestCacheConfigValidation(t *testing.T) {
	for name, cfg := range map[string]Config{
		"negative lag":     {MaxLag: -1},
		"default over max": {DefaultTTL: 2 * time.Hour},
		"negative L1":      {L1: L1Config{MaxBytes: -1}},
		"negative limits":  {Limits: Limits{MaxBytes: -5}},
		"brace in prefix":  {Redis: redis.NewClient(&redis.Options{ContextTimeoutEnabled: true}), RedisConfig: RedisConfig{Prefix: "a{b}"}},
		"bucket count":     {Redis: redis.NewClient(&redis.Options{ContextTimeoutEnabled: true}), RedisConfig: RedisConfig{TagBuckets: 1 << 20}},
		"no ctx timeouts":  {Redis: redis.NewClient(&redis.Options{})},
		"breaker":          {Redis: redis.NewClient(&redis.Options{ContextTimeoutEnabled: true}), RedisConfig: RedisConfig{Breaker: BreakerConfig{Cooldown: 2 * time.Second, MaxCooldown: time.Second}}},
	} {
		if c, err := New(cfg); err == nil {
			c.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCacheApplyLocal(t *testing.T) {
	c := newTestCache(t, Config{Health: healthy, Redis: sharedRedisClient(t), Tiered: TieredConfig{WriteQueue: -1},
		RedisConfig: RedisConfig{Prefix: "l" + randomHex(4)}})
	ctx := context.Background()
	if err := c.tiered.l2.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, Invalidation{Watermark: 10}); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(ctx, "k", versionResult(1), []Tag{"a"}, c.Stamp(), 0); err != nil {
		t.Fatal(err)
	}
	// Another instance's fan-out: the consumer applied it to Redis already (here it
	// did not, which shows that ApplyLocal leaves Redis alone).
	if err := c.ApplyLocal(ctx, Invalidation{Tags: []Tag{"a"}, Commit: 20}); err != nil {
		t.Fatal(err)
	}
	if _, hit := c.Lookup(ctx, "k"); hit {
		t.Fatal("locally invalidated entry answered")
	}
	if res, _ := c.tiered.l2.Get(ctx, "k", 10); res == nil {
		t.Fatal("ApplyLocal reached Redis")
	}
}

func TestTieredWriteQueue(t *testing.T) {
	c := newTestCache(t, Config{Health: healthy, Redis: sharedRedisClient(t), Tiered: TieredConfig{WriteQueue: 1},
		RedisConfig: RedisConfig{Prefix: "q" + randomHex(4)}})
	ctx := context.Background()
	if err := c.tiered.l2.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, Invalidation{Watermark: 10}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	writing := make(chan string, 4)
	c.tiered.l2.hooks = &storeHooks{BeforeStore: func(key string) {
		writing <- key
		<-release
	}}
	store := func(key string) error {
		tags := []Tag{"a"}
		err := c.Store(ctx, key, versionResult(1), tags, c.Stamp(), 0)
		tags[0] = "reused" // the driver reuses its slice: the queued write must not see it
		return err
	}
	if err := store("k1"); err != nil { // taken by the writer, which blocks in the hook
		t.Fatal(err)
	}
	if k := <-writing; k != "k1" {
		t.Fatal(k)
	}
	if err := store("k2"); err != nil { // waits in the queue
		t.Fatal(err)
	}
	if err := store("k3"); err == nil { // finds the queue full
		t.Fatal("third fill queued")
	}
	if c.Stats().FillsDropped != 1 {
		t.Fatalf("dropped %d", c.Stats().FillsDropped)
	}
	// The fills are in L1 at once, whatever happens to their Redis writes.
	for _, k := range []string{"k1", "k2", "k3"} {
		if _, hit := c.Lookup(ctx, k); !hit {
			t.Fatalf("%s not in L1", k)
		}
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for c.tiered.pending.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("queued fills not written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for k, want := range map[string]bool{"k1": true, "k2": true, "k3": false} {
		res, err := c.tiered.l2.Get(ctx, k, 10)
		if err != nil || (res != nil) != want {
			t.Errorf("%s in Redis: %v (%v), want %v", k, res != nil, err, want)
		}
	}
	if err := c.tiered.l2.Apply(ctx, Invalidation{Tags: []Tag{"a"}, Commit: 20}); err != nil {
		t.Fatal(err)
	}
	if res, _ := c.tiered.l2.Get(ctx, "k2", 10); res != nil {
		t.Error("queued fill stored with the caller's reused tags")
	}
}

func TestCacheClose(t *testing.T) {
	c, err := New(Config{Health: healthy, Redis: sharedRedisClient(t), RedisConfig: RedisConfig{Prefix: "c" + randomHex(4)}, VisibilityGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Store(ctx, "k", versionResult(1), nil, c.Stamp(), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.tiered.done:
	default:
		t.Fatal("writer goroutine still running after Close")
	}
	if _, hit := c.Lookup(ctx, "k"); hit {
		t.Fatal("hit after Close")
	}
	if ok, why := c.Usable(); ok || why != BypassClosed {
		t.Fatalf("Usable after Close: %v %q", ok, why)
	}
}

func TestBypassReasonsBounded(t *testing.T) {
	var b bypassCounters
	for i := 0; i < 2*maxBypassReasons; i++ {
		b.inc(fmt.Sprint("reason-", i))
	}
	s := b.snapshot()
	if len(s) != maxBypassReasons+1 || s[BypassOther] != maxBypassReasons {
		t.Fatalf("%d reasons, other = %d", len(s), s[BypassOther])
	}
}
