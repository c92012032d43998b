package querycache

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

// The stale-set race of DESIGN.md, driven step by step: a reader stamps and reads
// version 1; a writer commits version 2 and its invalidation is applied; the reader
// stores version 1. The hooks put the writer's step at the worst moments inside the
// stores, where no ordering of calls from outside can reach.

// TestStaleSetRaceInsideSet applies the invalidation after Set has found the fill
// valid and before it writes it. The entry must never be visible.
func TestStaleSetRaceInsideSet(t *testing.T) {
	for _, kind := range storeKinds() {
		t.Run(kind.name, func(t *testing.T) {
			for _, related := range []bool{true, false} {
				t.Run("related="+strconv.FormatBool(related), func(t *testing.T) {
					h := newHarness(t, kind.new(t, storeOptions{}))
					h.commit(10)
					st := h.stamp() // the reader stamps, then reads version 1
					ran := false
					h.s.setHooks(&storeHooks{BeforeStore: func(string) {
						if ran {
							return
						}
						ran = true
						if related {
							h.commit(20, "users:id=1") // the writer commits version 2
						} else {
							h.commit(20, "users:id=2")
						}
					}})
					err := h.set("k", 1, st, "users:id=1", "users:*x")
					h.s.setHooks(nil)
					if !ran {
						t.Fatal("the hook never ran: the race was not driven")
					}
					if err != nil && !errors.Is(err, ErrStaleFill) {
						t.Fatal(err)
					}
					got := h.get("k")
					if related && got != -1 {
						t.Fatalf("stale fill visible: version %d", got)
					}
					// Control: an unrelated commit in the same window leaves the fill valid,
					// so the check above is not passing by accident.
					if !related && got != 1 {
						t.Fatalf("valid fill lost to an unrelated commit: get = %d, err %v", got, err)
					}
				})
			}
		})
	}
}

// TestStaleSetRaceOrderings drives the race through the store's API in every order
// of the four steps that ends with the reader's Set: the fill may be accepted only
// when the invalidation was not applied before the read's end could have seen it.
func TestStaleSetRaceOrderings(t *testing.T) {
	for _, kind := range storeKinds() {
		t.Run(kind.name, func(t *testing.T) {
			h := newHarness(t, kind.new(t, storeOptions{}))
			h.commit(10)

			// stamp, commit+apply, set: born invalid.
			st := h.stamp()
			h.commit(20, "a")
			_ = h.set("k1", 1, st, "a")
			if v := h.get("k1"); v != -1 {
				t.Fatalf("fill stamped before an applied commit visible: %d", v)
			}

			// stamp, set, commit+apply: invalidated.
			st = h.stamp()
			if err := h.set("k2", 2, st, "a"); err != nil {
				t.Fatal(err)
			}
			h.commit(30, "a")
			if v := h.get("k2"); v != -1 {
				t.Fatalf("fill invalidated after it was stored visible: %d", v)
			}

			// commit+apply, stamp, set: the read saw the commit; valid.
			h.commit(40, "a")
			if err := h.set("k3", 3, h.stamp(), "a"); err != nil {
				t.Fatal(err)
			}
			if v := h.get("k3"); v != 3 {
				t.Fatalf("fill stamped after the commit: get = %d", v)
			}

			// Invalidation applied but the watermark not advanced yet (a batch in
			// progress): a reader stamping now may or may not have seen the commit, so
			// its fill must be born invalid.
			if err := h.s.Apply(h.ctx, Invalidation{Tags: []Tag{"a"}, Commit: 50}); err != nil {
				t.Fatal(err)
			}
			_ = h.set("k4", 4, h.stamp(), "a")
			if v := h.get("k4"); v != -1 {
				t.Fatalf("fill stamped below an applied invalidation visible: %d", v)
			}
		})
	}
}

// TestTieredPromotionRace applies an invalidation between Tiered's Redis read and
// its copy into L1: the copy must not make the stale entry visible in L1.
func TestTieredPromotionRace(t *testing.T) {
	for _, local := range []bool{false, true} {
		t.Run("onlyLocal="+strconv.FormatBool(local), func(t *testing.T) {
			s := storeKinds()[3].new(t, storeOptions{})
			h := newHarness(t, s)
			h.commit(10)
			if err := h.set("k", 1, h.stamp(), "a"); err != nil {
				t.Fatal(err)
			}
			s.l1.cache.Invalidate("k") // this instance's L1 lost it: the next read goes to Redis
			ran := false
			s.setHooks(&storeHooks{AfterL2Read: func(string) {
				ran = true
				if local {
					// The fan-out reached this process before Redis applied it.
					if err := s.tiered.ApplyLocal(h.ctx, Invalidation{Tags: []Tag{"a"}, Commit: 20}); err != nil {
						t.Error(err)
					}
					return
				}
				h.commit(20, "a")
			}})
			v := h.get("k")
			s.setHooks(nil)
			if !ran {
				t.Fatal("the read did not reach Redis")
			}
			if v != -1 {
				t.Fatalf("read raced by an invalidation returned %d", v)
			}
			if _, ok := s.l1.cache.GetIfPresent("k"); ok {
				t.Fatal("stale entry copied into L1")
			}
			if v := h.get("k"); v != -1 {
				t.Fatalf("second read returned %d", v)
			}
		})
	}
}

// TestL1FlushDuringFill checks the in-process generation: a fill stamped before a
// flush (a lost fan-out, a lost slot) is never stored.
func TestL1FlushDuringFill(t *testing.T) {
	h := newHarness(t, storeKinds()[0].new(t, storeOptions{}))
	h.commit(10)
	st := h.stamp()
	h.s.setHooks(&storeHooks{BeforeStore: func(string) {
		if err := h.s.Apply(h.ctx, Invalidation{Flush: true}); err != nil {
			t.Error(err)
		}
	}})
	_ = h.set("k", 1, st, "a")
	h.s.setHooks(nil)
	if v := h.get("k"); v != -1 {
		t.Fatalf("fill stamped before a flush visible: %d", v)
	}
}

func redisKinds() []storeKind { return storeKinds()[1:3] }

// TestRedisLostBucket evicts the bucket that holds an invalidation the fill needs,
// between the invalidation and the fill: the fill must not be accepted, before or
// after the store starts a new generation.
func TestRedisLostBucket(t *testing.T) {
	for _, kind := range redisKinds() {
		t.Run(kind.name, func(t *testing.T) {
			s := kind.new(t, storeOptions{})
			h := newHarness(t, s)
			r := s.redis
			h.commit(10)
			if err := h.set("live", 1, h.stamp(), "b"); err != nil {
				t.Fatal(err)
			}
			st := h.stamp()
			h.commit(20, "a")
			evictBucketOf(t, r, "a")
			if err := h.set("k", 1, st, "a"); !errors.Is(err, ErrStaleFill) {
				t.Fatalf("fill after its bucket was lost: %v", err)
			}
			if v := h.get("k"); v != -1 {
				t.Fatalf("stale fill visible after eviction: %d", v)
			}
			// The failed fill started a new generation: the old stamp stays refused.
			if err := h.set("k", 1, st, "a"); !errors.Is(err, ErrStaleFill) {
				t.Fatalf("fill stamped in the old generation: %v", err)
			}
			if v := h.get("live"); v != -1 {
				t.Fatalf("entry of the old generation survived: %d", v)
			}
			if err := h.set("k", 2, h.stamp(), "a"); err != nil {
				t.Fatalf("fill in the new generation: %v", err)
			}
			if v := h.get("k"); v != 2 {
				t.Fatalf("get = %d", v)
			}
			if r.Stats().Flushes < 2 {
				t.Errorf("flushes = %d, want the preparation and the repair", r.Stats().Flushes)
			}
		})
	}
}

// TestRedisLostBucketAfterFill evicts a bucket an entry depends on: the entry is a
// miss from then on (its tag's history is unknown), and the invalidation path
// starts a new generation.
func TestRedisLostBucketAfterFill(t *testing.T) {
	for _, kind := range redisKinds() {
		t.Run(kind.name, func(t *testing.T) {
			s := kind.new(t, storeOptions{})
			h := newHarness(t, s)
			h.commit(10, "a")
			if err := h.set("k", 1, h.stamp(), "a"); err != nil {
				t.Fatal(err)
			}
			evictBucketOf(t, s.redis, "a")
			if v := h.get("k"); v != -1 {
				t.Fatalf("entry of a lost bucket answered %d", v)
			}
			epoch := s.redis.epoch.Load()
			h.commit(30, "a")
			if s.redis.epoch.Load() == epoch {
				t.Fatal("the invalidation path did not start a new generation")
			}
		})
	}
}

// TestRedisLostMeta evicts the meta hash: nothing is valid until a new generation.
func TestRedisLostMeta(t *testing.T) {
	for _, kind := range redisKinds() {
		t.Run(kind.name, func(t *testing.T) {
			s := kind.new(t, storeOptions{})
			h := newHarness(t, s)
			h.commit(10)
			st := h.stamp()
			if err := h.set("k", 1, st, "a"); err != nil {
				t.Fatal(err)
			}
			if err := s.redis.client.Del(h.ctx, s.redis.metaKey).Err(); err != nil {
				t.Fatal(err)
			}
			if v := h.get("k"); v != -1 {
				t.Fatalf("entry answered without meta: %d", v)
			}
			if err := h.set("k2", 1, st, "a"); !errors.Is(err, ErrStaleFill) {
				t.Fatalf("fill without meta: %v", err)
			}
			h.commit(20) // the watermark comes back with the next batch
			if v := h.get("k"); v != -1 {
				t.Fatalf("entry of the old generation answered %d", v)
			}
			if err := h.set("k3", 3, h.stamp(), "a"); err != nil {
				t.Fatal(err)
			}
			if v := h.get("k3"); v != 3 {
				t.Fatalf("get = %d", v)
			}
		})
	}
}

// TestRedisBehind refuses to answer a reader that knows of more invalidations than
// Redis has applied.
func TestRedisBehind(t *testing.T) {
	for _, kind := range redisKinds() {
		t.Run(kind.name, func(t *testing.T) {
			s := kind.new(t, storeOptions{})
			h := newHarness(t, s)
			h.commit(10)
			if err := h.set("k", 1, h.stamp(), "a"); err != nil {
				t.Fatal(err)
			}
			res, err := s.Get(h.ctx, "k", 11)
			if err != nil || res != nil {
				t.Fatalf("Redis behind the reader answered: %v %v", res, err)
			}
			if s.redis.Stats().L2Behind != 1 {
				t.Errorf("L2Behind = %d", s.redis.Stats().L2Behind)
			}
			if v := h.get("k"); v != 1 {
				t.Fatalf("reader at the Redis watermark: get = %d", v)
			}
		})
	}
}

// TestRedisBucketCountMismatch: two instances configured with different bucket
// counts on one prefix must not trust each other's tag state.
func TestRedisBucketCountMismatch(t *testing.T) {
	client := sharedRedisClient(t)
	a := newTestRedis(t, client, LayoutOneSlot, storeOptions{})
	b, err := NewRedis(client, RedisConfig{Prefix: a.cfg.Prefix, TagBuckets: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Apply(ctx, Invalidation{Watermark: 10}); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(ctx, "k", Entry{Result: versionResult(1), Tags: []Tag{"a"}, Stamp: a.Stamp(10), TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if res, _ := b.Get(ctx, "k", 10); res != nil {
		t.Fatal("instance with another bucket count read the entry")
	}
	// b's invalidation would go to a bucket a does not look at: it must end a's
	// generation instead.
	if err := b.Apply(ctx, Invalidation{Tags: []Tag{"a"}, Commit: 20, Watermark: 20}); err != nil {
		t.Fatal(err)
	}
	if res, _ := a.Get(ctx, "k", 10); res != nil {
		t.Fatal("entry survived an invalidation from an instance with another bucket count")
	}
}

// evictBucketOf deletes both hashes of tag's bucket, as Redis eviction would.
func evictBucketOf(t *testing.T, r *Redis, tag Tag) {
	t.Helper()
	cur, old := r.bucketKeys(strconv.Itoa(r.bucketOf(tag)))
	if err := r.client.Del(context.Background(), cur, old).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestRedisLostWrites rolls Redis back as a failover to a lagging replica would:
// the watermark (and with it the invalidations before it) goes back. The consumer
// must notice on its next batch and start a new generation, so that the entries
// the lost invalidations should have killed never answer.
func TestRedisLostWrites(t *testing.T) {
	for _, kind := range redisKinds() {
		t.Run(kind.name, func(t *testing.T) {
			s := kind.new(t, storeOptions{})
			h := newHarness(t, s)
			r := s.redis
			h.commit(10)
			if err := h.set("k", 1, h.stamp(), "a"); err != nil {
				t.Fatal(err)
			}
			h.commit(20, "a")
			// The replica never got the invalidation at 20 nor the watermark.
			epoch := hex16(r.epoch.Load())
			cur, old := r.bucketKeys(strconv.Itoa(r.bucketOf("a")))
			for _, k := range []string{cur, old} {
				if err := r.client.HDel(h.ctx, k, "a").Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.client.HSet(h.ctx, r.metaKey, "w", hex16(10), "e", epoch).Err(); err != nil {
				t.Fatal(err)
			}
			if res, _ := s.Get(h.ctx, "k", 10); res == nil {
				t.Fatal("setup: the rolled-back Redis should answer a reader at 10")
			}
			h.commit(30, "b")
			if res, _ := s.Get(h.ctx, "k", 10); res != nil {
				t.Fatal("entry invalidated by a lost write answered after the next batch")
			}
			if v := h.get("k"); v != -1 {
				t.Fatalf("get = %d", v)
			}
		})
	}
}
