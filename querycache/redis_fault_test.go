package querycache

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/pgcachetest"
)

// Redis failures must never reach the application: every test here goes through
// Cache (what the driver calls) against a Redis of its own that it breaks.

// healthy is an invalidation source that is always healthy.
var healthy = HealthFunc(func() Health { return Health{Healthy: true} })

// faultCache is a Cache on client with short timeouts and a quick breaker, and a
// watermark of 10.
func faultCache(t *testing.T, client redis.UniversalClient) *Cache {
	t.Helper()
	c, err := New(Config{
		Redis: client,
		RedisConfig: RedisConfig{
			Prefix:     "f" + randomHex(4),
			GetTimeout: 50 * time.Millisecond, SetTimeout: 100 * time.Millisecond, ApplyTimeout: time.Second,
			Breaker: BreakerConfig{Failures: 3, Cooldown: 200 * time.Millisecond, MaxCooldown: 400 * time.Millisecond},
		},
		Tiered:          TieredConfig{WriteQueue: -1},
		Health:          healthy,
		VisibilityGrace: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Apply(context.Background(), Invalidation{Watermark: 10}); err != nil {
		t.Fatal(err)
	}
	return c
}

// fillL2 stores key in the cache and removes it from L1, so that the next lookup
// asks Redis.
func fillL2(t *testing.T, c *Cache, key string, version int64) {
	t.Helper()
	ctx := context.Background()
	if err := c.tiered.l2.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(ctx, key, versionResult(version), []Tag{"a"}, c.Stamp(), time.Minute); err != nil {
		t.Fatal(err)
	}
	c.tiered.l1.cache.Invalidate(key)
}

// timedLookup looks key up and fails the test if that took longer than limit.
func timedLookup(t *testing.T, c *Cache, key string, limit time.Duration) (*Result, bool) {
	t.Helper()
	start := time.Now()
	res, hit := c.Lookup(context.Background(), key)
	if d := time.Since(start); d > limit {
		t.Fatalf("lookup took %v, limit %v", d, limit)
	}
	return res, hit
}

func TestRedisFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	own, err := pgcachetest.StartRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = own.Terminate(context.Background()) })
	admin := redisClient(t, own.URL())

	t.Run("Corrupt", func(t *testing.T) {
		c := faultCache(t, redisClient(t, own.URL()))
		l2 := c.tiered.l2
		for _, damage := range []func(key string) error{
			func(key string) error { return admin.HSet(ctx, key, "v", "not a pgcache value").Err() },
			func(key string) error { return admin.Set(ctx, key, "a string, not a hash", 0).Err() },
			func(key string) error { return admin.HSet(ctx, key, "t", "7,99:short").Err() },
		} {
			fillL2(t, c, "k", 1)
			if err := damage(l2.entryPre + "k"); err != nil {
				t.Fatal(err)
			}
			before := c.Stats().Corrupt
			if _, hit := timedLookup(t, c, "k", time.Second); hit {
				t.Fatal("corrupt entry answered")
			}
			if c.Stats().Corrupt != before+1 {
				t.Errorf("corrupt count %d, want %d", c.Stats().Corrupt, before+1)
			}
			if n := admin.Exists(ctx, l2.entryPre+"k").Val(); n != 0 {
				t.Error("corrupt entry not deleted")
			}
		}
		if s := c.Stats(); s.BreakerTrips != 0 {
			t.Errorf("corrupt values tripped the breaker: %+v", s)
		}
	})

	t.Run("Slow", func(t *testing.T) {
		c := faultCache(t, redisClient(t, own.URL()))
		fillL2(t, c, "k", 1)
		if err := admin.Do(ctx, "CLIENT", "PAUSE", 1500, "ALL").Err(); err != nil {
			t.Fatal(err)
		}
		defer admin.Do(ctx, "CLIENT", "UNPAUSE")
		for i := 0; i < 5; i++ {
			if _, hit := timedLookup(t, c, "k", 500*time.Millisecond); hit {
				t.Fatal("a paused Redis answered")
			}
		}
		s := c.Stats()
		if s.Timeouts < 3 || s.BreakerTrips != 1 || s.BreakerOpen < 2 {
			t.Fatalf("timeouts %d, trips %d, skipped %d", s.Timeouts, s.BreakerTrips, s.BreakerOpen)
		}
		admin.Do(ctx, "CLIENT", "UNPAUSE")
		waitForHit(t, c, "k")
	})

	t.Run("Full", func(t *testing.T) {
		c := faultCache(t, redisClient(t, own.URL()))
		fillL2(t, c, "k", 1)
		if err := admin.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
			t.Fatal(err)
		}
		if err := admin.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
			t.Fatal(err)
		}
		defer admin.ConfigSet(ctx, "maxmemory", "0")

		// Reads still work on a full Redis.
		if res, hit := timedLookup(t, c, "k", time.Second); !hit || res.Value(0, 0) != int64(1) {
			t.Fatal("full Redis did not answer a read")
		}
		// Fills fail, counted as Full, and never trip the breaker.
		for i := 0; i < 5; i++ {
			c.tiered.l1.cache.Invalidate("k2")
			err := c.Store(ctx, "k2", versionResult(2), []Tag{"a"}, c.Stamp(), time.Minute)
			if err == nil {
				t.Fatal("fill into a full Redis succeeded")
			}
		}
		if s := c.Stats(); s.Full < 5 || s.BreakerTrips != 0 {
			t.Fatalf("full %d, trips %d", s.Full, s.BreakerTrips)
		}
		// An invalidation cannot be written: the Redis watermark stays behind, and
		// readers that know of the commit stop reading this Redis.
		if err := c.Apply(ctx, Invalidation{Tags: []Tag{"a"}, Commit: 20, Watermark: 20}); err == nil {
			t.Fatal("invalidation into a full Redis reported success")
		}
		c.tiered.l1.cache.Invalidate("k")
		if _, hit := timedLookup(t, c, "k", time.Second); hit {
			t.Fatal("entry invalidated while Redis was full answered")
		}
		if c.Stats().L2Behind == 0 {
			t.Error("stale Redis not detected as behind")
		}
		// Memory again: the next batch starts a new generation first, then all is well.
		admin.ConfigSet(ctx, "maxmemory", "0")
		if err := c.Apply(ctx, Invalidation{Tags: []Tag{"b"}, Commit: 30, Watermark: 30}); err != nil {
			t.Fatal(err)
		}
		if _, hit := timedLookup(t, c, "k", time.Second); hit {
			t.Fatal("entry of the old generation answered after recovery")
		}
		if err := c.Store(ctx, "k", versionResult(3), []Tag{"a"}, c.Stamp(), time.Minute); err != nil {
			t.Fatal(err)
		}
		c.tiered.l1.cache.Invalidate("k")
		if res, hit := timedLookup(t, c, "k", time.Second); !hit || res.Value(0, 0) != int64(3) {
			t.Fatal("no hit after recovery")
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		if err := admin.ConfigSet(ctx, "requirepass", "secret").Err(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			admin.Do(ctx, "AUTH", "secret")
			admin.ConfigSet(ctx, "requirepass", "")
		}()
		opts, _ := redis.ParseURL(own.URL())
		opts.ContextTimeoutEnabled = true
		opts.Password = "wrong"
		bad := redis.NewClient(opts)
		t.Cleanup(func() { bad.Close() })
		c, err := New(Config{Redis: bad, Health: healthy, Tiered: TieredConfig{WriteQueue: -1}, VisibilityGrace: -1,
			RedisConfig: RedisConfig{Breaker: BreakerConfig{Failures: 2, Cooldown: time.Minute}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		for i := 0; i < 5; i++ {
			if _, hit := timedLookup(t, c, "k", time.Second); hit {
				t.Fatal("hit through a client Redis refused")
			}
			_ = c.Store(ctx, "k", versionResult(1), []Tag{"a"}, c.Stamp(), time.Minute)
			c.tiered.l1.cache.Invalidate("k")
		}
		s := c.Stats()
		if s.Errors != 2 || s.BreakerTrips != 1 || s.BreakerOpen < 5 {
			t.Fatalf("errors %d, trips %d, skipped %d: the breaker should stop calling after 2 failures", s.Errors, s.BreakerTrips, s.BreakerOpen)
		}
	})

	t.Run("Down", func(t *testing.T) {
		if pgcachetestExternalRedis() {
			t.Skip("an external Redis cannot be stopped")
		}
		c := faultCache(t, redisClient(t, own.URL()))
		fillL2(t, c, "k", 1)
		if err := own.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		stopped := true
		defer func() {
			if stopped {
				_ = own.Start(context.Background())
			}
		}()
		for i := 0; i < 10; i++ {
			if _, hit := timedLookup(t, c, "k", time.Second); hit {
				t.Fatal("a stopped Redis answered")
			}
			if err := c.Store(ctx, "k", versionResult(1), []Tag{"a"}, c.Stamp(), time.Minute); err == nil {
				t.Fatal("fill into a stopped Redis reported success")
			}
			c.tiered.l1.cache.Invalidate("k")
		}
		s := c.Stats()
		if s.BreakerTrips < 1 || s.BreakerOpen < 5 {
			t.Fatalf("trips %d, skipped %d", s.BreakerTrips, s.BreakerOpen)
		}
		// The consumer's invalidations fail too; the cache keeps working from L1.
		if err := c.Apply(ctx, Invalidation{Tags: []Tag{"x"}, Commit: 20, Watermark: 20}); err == nil {
			t.Fatal("invalidation into a stopped Redis reported success")
		}
		if c.Watermark() != 20 {
			t.Fatalf("watermark %d: L1 must go on with the stream", c.Watermark())
		}
		if err := own.Start(ctx); err != nil {
			t.Fatal(err)
		}
		stopped = false
		// The failed invalidation poisoned the Redis store: the next batch starts a
		// new generation, then fills and hits work again.
		deadline := time.Now().Add(20 * time.Second)
		for c.Apply(ctx, Invalidation{Tags: []Tag{"y"}, Commit: 30, Watermark: 30}) != nil {
			if time.Now().After(deadline) {
				t.Fatal("Redis store did not recover")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := c.Store(ctx, "k", versionResult(2), []Tag{"a"}, c.Stamp(), time.Minute); err != nil {
			t.Fatal(err)
		}
		c.tiered.l1.cache.Invalidate("k")
		waitForHit(t, c, "k")
	})
}

func pgcachetestExternalRedis() bool {
	return os.Getenv(pgcachetest.EnvRedisURL) != ""
}

// waitForHit waits until key hits in Redis (the breaker's cool-down has to pass).
func waitForHit(t *testing.T, c *Cache, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.tiered.l1.cache.Invalidate(key)
		if _, hit := c.Lookup(context.Background(), key); hit {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no hit after recovery; stats %+v", c.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
