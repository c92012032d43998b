package querycache

import (
	"context"
	"crypto/rand"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/pgcachetest"
)

// storeOptions are the knobs the contract tests turn.
type storeOptions struct {
	maxTags int // L1 MaxTags, and Redis TagsPerBucket with a single bucket
}

// testStore is a Store under test with access to its parts.
type testStore struct {
	Store
	l1     *L1
	redis  *Redis
	tiered *Tiered
}

func (s testStore) setHooks(h *storeHooks) {
	if s.l1 != nil {
		s.l1.hooks = h
	}
	if s.redis != nil {
		s.redis.hooks = h
	}
	if s.tiered != nil {
		s.tiered.hooks = h
	}
}

type storeKind struct {
	name string
	new  func(t *testing.T, o storeOptions) testStore
}

func storeKinds() []storeKind {
	return []storeKind{
		{"L1", func(t *testing.T, o storeOptions) testStore {
			l1 := newTestL1(t, o)
			return testStore{Store: l1, l1: l1}
		}},
		{"Redis", func(t *testing.T, o storeOptions) testStore {
			r := newTestRedis(t, sharedRedisClient(t), LayoutOneSlot, o)
			return testStore{Store: r, redis: r}
		}},
		{"RedisSpread", func(t *testing.T, o storeOptions) testStore {
			r := newTestRedis(t, sharedRedisClient(t), LayoutSpread, o)
			return testStore{Store: r, redis: r}
		}},
		{"Tiered", func(t *testing.T, o storeOptions) testStore {
			l1 := newTestL1(t, o)
			r := newTestRedis(t, sharedRedisClient(t), LayoutOneSlot, o)
			ts, err := NewTiered(l1, r, TieredConfig{WriteQueue: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ts.Close() })
			return testStore{Store: ts, l1: l1, redis: r, tiered: ts}
		}},
	}
}

func newTestL1(t *testing.T, o storeOptions) *L1 {
	t.Helper()
	l1, err := NewL1(L1Config{MaxTags: o.maxTags})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l1.Close() })
	return l1
}

// newTestRedis returns a Redis store under a prefix of its own, with its generation
// prepared.
func newTestRedis(t *testing.T, client redis.UniversalClient, layout RedisLayout, o storeOptions) *Redis {
	t.Helper()
	cfg := RedisConfig{Prefix: "t" + randomHex(6), Layout: layout, GetTimeout: time.Second, SetTimeout: time.Second}
	if o.maxTags > 0 {
		cfg.TagBuckets, cfg.TagsPerBucket = 1, o.maxTags
	}
	r, err := NewRedis(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sharedRedisClient is a client of the package's shared Redis, closed with the test.
func sharedRedisClient(t testing.TB) *redis.Client {
	t.Helper()
	return redisClient(t, pgcachetest.SharedRedis(t).URL())
}

func redisClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// harness drives a store the way Cache does: it keeps the watermark, which every
// commit advances after its invalidation is applied.
type harness struct {
	t   *testing.T
	s   testStore
	ctx context.Context
	w   atomic.Uint64
}

func newHarness(t *testing.T, s testStore) *harness {
	return &harness{t: t, s: s, ctx: context.Background()}
}

func (h *harness) watermark() LSN { return LSN(h.w.Load()) }

// commit applies the invalidation of a transaction committed at lsn, then advances
// the watermark to it.
func (h *harness) commit(lsn LSN, tags ...Tag) {
	h.t.Helper()
	if err := h.s.Apply(h.ctx, Invalidation{Tags: tags, Commit: lsn, Watermark: lsn}); err != nil {
		h.t.Fatalf("apply at %d: %v", lsn, err)
	}
	for {
		cur := h.w.Load()
		if uint64(lsn) <= cur || h.w.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

func (h *harness) stamp() Stamp { return h.s.Stamp(h.watermark()) }

func (h *harness) set(key string, version int64, st Stamp, tags ...Tag) error {
	return h.s.Set(h.ctx, key, Entry{Result: versionResult(version), Tags: tags, Stamp: st, TTL: time.Minute})
}

// get returns the version stored under key, or -1 on a miss.
func (h *harness) get(key string) int64 {
	h.t.Helper()
	res, err := h.s.Get(h.ctx, key, h.watermark())
	if err != nil {
		h.t.Fatalf("get %s: %v", key, err)
	}
	if res == nil {
		return -1
	}
	return res.Value(0, 0).(int64)
}

func versionResult(v int64) *Result {
	b := NewResultBuilder([]Column{{Name: "v", TypeOID: 20, DatabaseTypeName: "INT8", ScanType: ScanTypeInt64}}, Limits{})
	if err := b.Add([]driver.Value{v}); err != nil {
		panic(err)
	}
	r, err := b.Result()
	if err != nil {
		panic(err)
	}
	return r
}

// TestStoreContract runs the contract of Store (store.go) against every
// implementation.
func TestStoreContract(t *testing.T) {
	for _, kind := range storeKinds() {
		t.Run(kind.name, func(t *testing.T) {
			for _, tc := range contractCases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, newHarness(t, kind.new(t, tc.opts)))
				})
			}
		})
	}
}

var contractCases = []struct {
	name string
	opts storeOptions
	run  func(t *testing.T, h *harness)
}{
	{"MissThenHit", storeOptions{}, func(t *testing.T, h *harness) {
		h.commit(10)
		if v := h.get("k"); v != -1 {
			t.Fatalf("empty store answered %d", v)
		}
		if err := h.set("k", 1, h.stamp(), "users:id=1"); err != nil {
			t.Fatal(err)
		}
		if v := h.get("k"); v != 1 {
			t.Fatalf("get = %d, want 1", v)
		}
		if err := h.set("k", 2, h.stamp(), "users:id=1"); err != nil {
			t.Fatal(err)
		}
		if v := h.get("k"); v != 2 {
			t.Fatalf("overwritten entry: get = %d, want 2", v)
		}
		if v := h.get("other"); v != -1 {
			t.Fatalf("other key answered %d", v)
		}
	}},
	{"InvalidationAfterFill", storeOptions{}, func(t *testing.T, h *harness) {
		h.commit(10)
		st := h.stamp()
		for _, k := range []string{"a", "b", "c"} {
			if err := h.set(k, 1, st, Tag(k), "users:*"); err != nil {
				t.Fatal(err)
			}
		}
		h.commit(20, "a")
		if v := h.get("a"); v != -1 {
			t.Fatalf("invalidated entry answered %d", v)
		}
		if v := h.get("b"); v != 1 {
			t.Fatalf("unrelated entry: get = %d", v)
		}
		h.commit(30, "users:*")
		if h.get("b") != -1 || h.get("c") != -1 {
			t.Fatal("relation-wide invalidation missed an entry")
		}
	}},
	{"InvalidationAlreadyInTheRead", storeOptions{}, func(t *testing.T, h *harness) {
		h.commit(10, "a")
		// Stamped at 10: the read saw the commit at 10.
		if err := h.set("k", 1, h.stamp(), "a"); err != nil {
			t.Fatal(err)
		}
		if v := h.get("k"); v != 1 {
			t.Fatalf("get = %d", v)
		}
		// Replaying an invalidation the entry already reflects changes nothing.
		h.commit(10, "a")
		h.commit(5, "a")
		if v := h.get("k"); v != 1 {
			t.Fatalf("after replays: get = %d", v)
		}
	}},
	{"StaleFillRejected", storeOptions{}, func(t *testing.T, h *harness) {
		h.commit(10)
		st := h.stamp()                    // the reader stamps and reads version 1 ...
		h.commit(20, "a")                  // ... a writer commits version 2, its invalidation is applied ...
		err := h.set("k", 1, st, "a", "b") // ... and the reader stores version 1.
		if err != nil && !errors.Is(err, ErrStaleFill) {
			t.Fatal(err)
		}
		if v := h.get("k"); v != -1 {
			t.Fatalf("stale fill visible: %d", v)
		}
		if err == nil {
			t.Fatal("stale fill accepted by Set")
		}
	}},
	{"Flush", storeOptions{}, func(t *testing.T, h *harness) {
		h.commit(10)
		before := h.stamp()
		if err := h.set("k", 1, before, "a"); err != nil {
			t.Fatal(err)
		}
		if err := h.s.Apply(h.ctx, Invalidation{Flush: true}); err != nil {
			t.Fatal(err)
		}
		if v := h.get("k"); v != -1 {
			t.Fatalf("entry survived a flush: %d", v)
		}
		if err := h.set("k", 2, before, "a"); !errors.Is(err, ErrStaleFill) {
			t.Fatalf("fill stamped before the flush: %v", err)
		}
		if v := h.get("k"); v != -1 {
			t.Fatalf("fill stamped before the flush visible: %d", v)
		}
		if err := h.set("k", 3, h.stamp(), "a"); err != nil {
			t.Fatal(err)
		}
		if v := h.get("k"); v != 3 {
			t.Fatalf("after the flush: get = %d", v)
		}
	}},
	{"FlushResetsWatermark", storeOptions{}, func(t *testing.T, h *harness) {
		h.commit(1000, "a")
		// A new replication stream (another server) starts at lower LSNs.
		if err := h.s.Apply(h.ctx, Invalidation{Flush: true, Watermark: 50}); err != nil {
			t.Fatal(err)
		}
		h.w.Store(50)
		if err := h.set("k", 1, h.stamp(), "a"); err != nil {
			t.Fatalf("fill after the flush: %v", err)
		}
		if v := h.get("k"); v != 1 {
			t.Fatalf("old generation's tag LSNs leaked into the new one: get = %d", v)
		}
	}},
	{"TTL", storeOptions{}, func(t *testing.T, h *harness) {
		h.commit(10)
		err := h.s.Set(h.ctx, "k", Entry{Result: versionResult(1), Tags: []Tag{"a"}, Stamp: h.stamp(), TTL: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if v := h.get("k"); v != 1 {
			t.Fatalf("get = %d", v)
		}
		deadline := time.Now().Add(5 * time.Second)
		for h.get("k") != -1 {
			if time.Now().After(deadline) {
				t.Fatal("entry outlived its TTL")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}},
	{"ForgottenTagsCountAtTheFloor", storeOptions{maxTags: 4}, func(t *testing.T, h *harness) {
		h.commit(10)
		if err := h.set("old", 1, h.stamp(), "never-invalidated"); err != nil {
			t.Fatal(err)
		}
		if err := h.set("recent", 1, h.stamp(), "t0"); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			h.commit(LSN(11+i), Tag(fmt.Sprintf("t%d", i)))
		}
		// t0 was invalidated at 11 and forgotten; "recent" was stamped at 10.
		if v := h.get("recent"); v != -1 {
			t.Fatalf("entry of a forgotten tag, invalidated after its stamp, answered %d", v)
		}
		// The tag of "old" was never invalidated, but the store cannot tell it from a
		// forgotten one: it counts at the floor, above the stamp.
		if v := h.get("old"); v != -1 {
			t.Fatalf("entry below the floor answered %d", v)
		}
		// Stamped above the floor, the same tags are valid again.
		st := h.stamp()
		if err := h.set("new", 2, st, "never-invalidated", "t0", "t19"); err != nil {
			t.Fatal(err)
		}
		if v := h.get("new"); v != 2 {
			t.Fatalf("entry above the floor: get = %d", v)
		}
	}},
	{"ConcurrentReadersNeverSeeStaleData", storeOptions{}, concurrentStaleReadCheck},
}

// concurrentStaleReadCheck runs writers and readers over a model database of a few
// rows. A writer commits a new version of a row at a new LSN, applies its
// invalidation, advances the watermark and only then publishes the version as the
// least any later read may return. Readers stamp, read the model, fill, and read
// the cache; no read may return a version older than the one published before it
// started.
func concurrentStaleReadCheck(t *testing.T, h *harness) {
	const rows = 4
	var (
		mu       sync.Mutex // serializes commits: LSN order is commit order
		lsn      LSN        = 100
		versions [rows]atomic.Int64
		minSeen  [rows]atomic.Int64
		reads    atomic.Int64
		hits     atomic.Int64
	)
	h.commit(lsn)
	tag := func(r int) Tag { return Tag(fmt.Sprintf("rows:id=%d", r)) }
	key := func(r int) string { return fmt.Sprintf("row-%d", r) }
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				r := i % rows
				mu.Lock()
				lsn++
				v := versions[r].Add(1)
				commitAt := lsn
				if err := h.s.Apply(h.ctx, Invalidation{Tags: []Tag{tag(r)}, Commit: commitAt, Watermark: commitAt}); err != nil {
					mu.Unlock()
					errs <- err
					return
				}
				h.w.Store(uint64(commitAt))
				mu.Unlock()
				minSeen[r].Store(v)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	for rd := 0; rd < 4; rd++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				r := i % rows
				floor := minSeen[r].Load()
				res, err := h.s.Get(h.ctx, key(r), h.watermark())
				if err != nil {
					errs <- err
					return
				}
				reads.Add(1)
				if res != nil {
					hits.Add(1)
					if v := res.Value(0, 0).(int64); v < floor {
						errs <- fmt.Errorf("row %d: read version %d after version %d was committed and applied", r, v, floor)
						return
					}
					continue
				}
				st := h.s.Stamp(h.watermark())
				v := versions[r].Load() // the database read
				err = h.s.Set(h.ctx, key(r), Entry{Result: versionResult(v), Tags: []Tag{tag(r)}, Stamp: st, TTL: time.Minute})
				if err != nil && !errors.Is(err, ErrStaleFill) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d reads, %d hits", reads.Load(), hits.Load())
	if hits.Load() == 0 {
		t.Error("no hits at all: the test exercised nothing")
	}
}
