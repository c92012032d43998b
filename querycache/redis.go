package querycache

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis store (L2), shared by every instance of the application.
//
// # Keys
//
// All keys start with the prefix ("pgcache"). Meta and the repair lock are
// "{pgcache}:m" and "{pgcache}:lock". In the one-slot layout every key carries the
// hash tag {pgcache}, so a read is one Lua script checking the entry's tags where
// they live: one round trip. In the spread layout (Redis Cluster) entries are
// "pgcache:e:<key>", spread over the cluster by key, and bucket i is
// "{pgcache:b<i>}:c" and "{pgcache:b<i>}:o"; a read takes two round trips: the
// entry and meta, then one script per bucket of its tags, pipelined.
//
// # Why tag state cannot be lost silently
//
// Tag LSNs live in a fixed number of bucket hashes (TagBuckets, by FNV-1a of the
// tag), created when a generation starts, never expiring. Each bucket keeps two
// hash generations; when the current one holds more than TagsPerBucket tags the old
// one is forgotten and the bucket's floor rises to the highest LSN it held: the
// bounded tag map, with "forgotten counts as invalidated at the floor".
//
// Tag keys must outlive the entries that refer to them: buckets have no TTL, so
// they do. Expiry can therefore never forget an invalidation. Eviction can: under an
// allkeys-* maxmemory-policy Redis may evict a bucket. Every bucket (both hashes)
// carries the generation it belongs to, and an entry is valid only if every bucket
// of its tags exists and carries the entry's generation. A bucket that is gone or of
// another generation is "lost": the entries depending on it are misses, fills
// depending on it are rejected, and the next write starts a new generation (a new
// random id, all buckets reset), which invalidates every entry of the old one. An
// evicted bucket can make entries misses, never make a stale entry valid. The
// meta hash (generation, watermark, bucket count) is guarded the same way: without
// it nothing is valid. Under volatile-* policies only entries (which have TTLs) are
// evicted; under noeviction a full Redis refuses writes: fills fail (counted as
// Full), and a failed invalidation poisons the store (below).
//
// # Watermark and failed invalidations
//
// Meta also holds the watermark applied to this Redis. A reader passes its own
// watermark, and Redis answers only if it has applied at least as much: an
// instance that learned of a commit (through the fan-out) never reads a Redis that
// has not applied it. When applying an invalidation fails, the store stops
// advancing the Redis watermark ("poisoned") until it has started a new generation,
// which it attempts before the next invalidation.
//
// # Lost writes
//
// Redis may lose acknowledged writes: asynchronous replication and a failover to a
// replica that had not received them, or a restore. The consumer remembers the
// watermark it last wrote; finding a lower one in Redis means the invalidations
// before it may be lost as well, and it starts a new generation. Until then readers
// that know of the lost commits see Redis as behind. A consumer that restarts
// between the loss and its next batch does not remember what it wrote: after a
// failover of the Redis behind pgcache, flush (Invalidation.Flush) to be sure.
//
// # Stamps and generations
//
// A fill is stored only if Redis's generation is still the one the store had seen
// before the fill's database read (the Stamp): a generation change during the read
// may have dropped invalidations the fill needed.

// RedisLayout says how the Redis store spreads its keys over hash slots.
type RedisLayout int

// Layouts.
const (
	// LayoutAuto is LayoutOneSlot, or LayoutSpread for a *redis.ClusterClient.
	LayoutAuto RedisLayout = iota
	// LayoutOneSlot puts every key in one hash slot: one round trip per read.
	// On a Cluster that puts the whole cache on one shard.
	LayoutOneSlot
	// LayoutSpread spreads entries and tag buckets over the cluster: two round
	// trips per read.
	LayoutSpread
)

// RedisConfig configures the Redis store.
type RedisConfig struct {
	// Prefix starts every key; different prefixes are different caches. It may not
	// contain '{' or '}'. default: "pgcache"
	Prefix string
	// Layout chooses how keys are spread over hash slots. default: LayoutAuto
	Layout RedisLayout
	// TagBuckets is the number of tag buckets. Every instance sharing the Redis must
	// use the same value (a mismatch makes every read a miss). default: 256
	TagBuckets int
	// TagsPerBucket is how many tags one bucket generation holds before the oldest
	// generation is forgotten (each bucket holds between one and two generations).
	// default: 1024
	TagsPerBucket int
	// GetTimeout bounds a read. default: 50ms
	GetTimeout time.Duration
	// SetTimeout bounds a fill. default: 200ms
	SetTimeout time.Duration
	// ApplyTimeout bounds applying one invalidation batch or a flush. default: 5s
	ApplyTimeout time.Duration
	// Breaker configures the circuit breaker in front of Redis.
	Breaker BreakerConfig
	// Logger receives warnings (lost tag state, new generations). default: slog.Default()
	Logger *slog.Logger
	// Clock is the breaker's clock. default: the system clock
	Clock Clock
}

// Redis store defaults.
const (
	DefaultRedisPrefix        = "pgcache"
	DefaultRedisTagBuckets    = 256
	DefaultRedisTagsPerBucket = 1024
	DefaultRedisGetTimeout    = 50 * time.Millisecond
	DefaultRedisSetTimeout    = 200 * time.Millisecond
	DefaultRedisApplyTimeout  = 5 * time.Second
	maxRedisTagBuckets        = 1 << 16
	repairLockTTL             = 30 * time.Second
)

func (c RedisConfig) withDefaults() RedisConfig {
	if c.Prefix == "" {
		c.Prefix = DefaultRedisPrefix
	}
	if c.TagBuckets == 0 {
		c.TagBuckets = DefaultRedisTagBuckets
	}
	if c.TagsPerBucket == 0 {
		c.TagsPerBucket = DefaultRedisTagsPerBucket
	}
	if c.GetTimeout == 0 {
		c.GetTimeout = DefaultRedisGetTimeout
	}
	if c.SetTimeout == 0 {
		c.SetTimeout = DefaultRedisSetTimeout
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = DefaultRedisApplyTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	c.Breaker = c.Breaker.withDefaults()
	return c
}

func (c RedisConfig) validate() error {
	switch {
	case strings.ContainsAny(c.Prefix, "{}"):
		return fmt.Errorf("querycache: Redis prefix %q contains a brace", c.Prefix)
	case c.Layout < LayoutAuto || c.Layout > LayoutSpread:
		return fmt.Errorf("querycache: unknown Redis layout %d", c.Layout)
	case c.TagBuckets < 0 || c.TagBuckets > maxRedisTagBuckets:
		return fmt.Errorf("querycache: TagBuckets %d out of 1..%d", c.TagBuckets, maxRedisTagBuckets)
	case c.TagsPerBucket < 0:
		return fmt.Errorf("querycache: negative TagsPerBucket %d", c.TagsPerBucket)
	case c.GetTimeout < 0 || c.SetTimeout < 0 || c.ApplyTimeout < 0:
		return errors.New("querycache: negative Redis timeout")
	}
	return c.Breaker.validate()
}

// Redis is the shared Store on Redis (see the package documentation of this file).
type Redis struct {
	client redis.UniversalClient
	cfg    RedisConfig
	stats  *counters
	brk    *breaker
	hooks  *storeHooks

	spread     bool
	metaKey    string
	lockKey    string
	entryPre   string
	bucketPre  string // bucket key = bucketPre + i + bucketPost + ":c" / ":o"
	bucketPost string
	nBuckets   string // TagBuckets as sent to the scripts

	epoch    atomic.Uint64 // last generation seen; 0: none yet
	written  atomic.Uint64 // the highest watermark this process wrote to Redis
	poisoned atomic.Bool   // an invalidation failed: start a new generation before advancing the watermark
	closed   atomic.Bool
	repairMu sync.Mutex // one repair at a time from this process
}

// NewRedis returns a Redis store on client. The client must respect context
// deadlines (redis.Options.ContextTimeoutEnabled) so that the store's timeouts bound
// every call; NewRedis refuses a client it can tell does not. NewRedis does no I/O:
// Redis being down is not an error here but a miss later.
func NewRedis(client redis.UniversalClient, cfg RedisConfig) (*Redis, error) {
	return newRedis(client, cfg, new(counters))
}

func newRedis(client redis.UniversalClient, cfg RedisConfig, stats *counters) (*Redis, error) {
	if client == nil {
		return nil, errors.New("querycache: nil Redis client")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if !contextTimeoutEnabled(client) {
		return nil, errors.New("querycache: the Redis client must be created with ContextTimeoutEnabled: true, so that pgcache's timeouts bound its calls")
	}
	s := &Redis{client: client, cfg: cfg, stats: stats, brk: newBreaker(cfg.Breaker, cfg.Clock, stats)}
	_, isCluster := client.(*redis.ClusterClient)
	s.spread = cfg.Layout == LayoutSpread || (cfg.Layout == LayoutAuto && isCluster)
	p := cfg.Prefix
	s.metaKey = "{" + p + "}:m"
	s.lockKey = "{" + p + "}:lock"
	if s.spread {
		s.entryPre = p + ":e:"
		s.bucketPre, s.bucketPost = "{"+p+":b", "}"
	} else {
		s.entryPre = "{" + p + "}:e:"
		s.bucketPre, s.bucketPost = "{"+p+"}:b", ""
	}
	s.nBuckets = strconv.Itoa(cfg.TagBuckets)
	return s, nil
}

// contextTimeoutEnabled reports whether client honours context deadlines, as far as
// its type tells.
func contextTimeoutEnabled(client redis.UniversalClient) bool {
	switch c := client.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}

// hex16 formats an LSN or generation as 16 lower-case hex digits.
func hex16(v uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return string(b[:])
}

func parseHex16(s string) (uint64, bool) {
	if len(s) != 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 16, 64)
	return v, err == nil
}

// bucketOf returns the bucket of a tag: FNV-1a (32 bits) of its bytes, modulo the
// bucket count. Every instance must compute the same, so this never changes.
func (s *Redis) bucketOf(tag Tag) int {
	h := uint32(2166136261)
	for i := 0; i < len(tag); i++ {
		h ^= uint32(tag[i])
		h *= 16777619
	}
	return int(h % uint32(s.cfg.TagBuckets))
}

func (s *Redis) bucketKeys(b string) (cur, old string) {
	k := s.bucketPre + b + s.bucketPost
	return k + ":c", k + ":o"
}

// tagList encodes tags with their buckets as stored in an entry.
func (s *Redis) tagList(tags []Tag) string {
	var b strings.Builder
	for _, t := range tags {
		b.WriteString(strconv.Itoa(s.bucketOf(t)))
		b.WriteByte(',')
		b.WriteString(strconv.Itoa(len(t)))
		b.WriteByte(':')
		b.WriteString(string(t))
	}
	return b.String()
}

// parseTagList is the Go twin of the scripts' parse_tags: pairs of bucket, tag.
func (s *Redis) parseTagList(t string) ([][2]string, bool) {
	var out [][2]string
	for t != "" {
		comma := strings.IndexByte(t, ',')
		if comma < 0 {
			return nil, false
		}
		colon := strings.IndexByte(t[comma+1:], ':')
		if colon < 0 {
			return nil, false
		}
		colon += comma + 1
		b := t[:comma]
		bn, err1 := strconv.Atoi(b)
		l, err2 := strconv.Atoi(t[comma+1 : colon])
		if err1 != nil || err2 != nil || bn < 0 || bn >= s.cfg.TagBuckets || l < 0 || colon+1+l > len(t) {
			return nil, false
		}
		out = append(out, [2]string{b, t[colon+1 : colon+1+l]})
		t = t[colon+1+l:]
	}
	return out, true
}

func (s *Redis) learnEpoch(hex string) {
	if e, ok := parseHex16(hex); ok {
		s.epoch.Store(e)
	}
}

// call runs fn against Redis within timeout, through the breaker, and classifies
// its error for the counters. It returns ErrUnavailable without calling when the
// breaker is open or the store closed.
func (s *Redis) call(ctx context.Context, timeout time.Duration, fn func(ctx context.Context) error) error {
	if s.closed.Load() || !s.brk.allow() {
		return ErrUnavailable
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	err := fn(cctx)
	cancel()
	if err == nil || errors.Is(err, redis.Nil) {
		s.brk.record(callOK)
		return nil
	}
	switch {
	case ctx.Err() != nil:
		// The caller gave up: says nothing about Redis.
		s.brk.record(callUnknown)
		return err
	case errors.Is(err, errRepairBusy):
		s.brk.record(callOK)
		return err
	case isOOM(err):
		// Redis answered: it is alive, only full.
		s.stats.errors.Add(1)
		s.stats.full.Add(1)
		s.brk.record(callOK)
		return err
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		s.stats.errors.Add(1)
		s.stats.timeouts.Add(1)
	default:
		s.stats.errors.Add(1)
	}
	s.brk.record(callFailed)
	return err
}

// errRepairBusy: another instance held the repair lock for longer than we waited.
var errRepairBusy = errors.New("querycache: another instance is starting a new Redis generation")

func isOOM(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(re.Error(), "OOM command not allowed")
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// redisEntry is an entry as read from Redis.
type redisEntry struct {
	result *Result
	stamp  LSN
	tags   []Tag
	ttl    time.Duration
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, key string, watermark LSN) (*Result, error) {
	e, err := s.getEntry(ctx, key, watermark)
	if e == nil {
		return nil, err
	}
	return e.result, nil
}

func (s *Redis) getEntry(ctx context.Context, key string, watermark LSN) (*redisEntry, error) {
	var (
		status string
		fields []any
	)
	err := s.call(ctx, s.cfg.GetTimeout, func(ctx context.Context) error {
		var err error
		if s.spread {
			status, fields, err = s.getSpread(ctx, key, watermark)
		} else {
			status, fields, err = s.getOneSlot(ctx, key, watermark)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	switch status {
	case "hit":
	case "miss", "noepoch":
		return nil, nil
	case "behind":
		s.stats.behind.Add(1)
		return nil, nil
	case "invalid", "lost":
		s.stats.invalidated.Add(1)
		return nil, nil
	case "corrupt":
		s.stats.corrupt.Add(1)
		return nil, fmt.Errorf("%w: tag list of %q", ErrCorrupt, key)
	default:
		return nil, fmt.Errorf("querycache: Redis read of %q: unexpected reply %q", key, status)
	}
	e, err := s.decodeHit(fields)
	if err != nil {
		s.stats.corrupt.Add(1)
		s.deleteEntry(ctx, key)
		return nil, fmt.Errorf("querycache: Redis entry %q: %w", key, err)
	}
	s.stats.hitsL2.inc()
	return e, nil
}

// decodeHit decodes {value, stamp, tag list, pttl}.
func (s *Redis) decodeHit(f []any) (*redisEntry, error) {
	if len(f) != 4 {
		return nil, fmt.Errorf("%w: %d fields", ErrCorrupt, len(f))
	}
	v, _ := f[0].(string)
	st, _ := f[1].(string)
	tl, _ := f[2].(string)
	pttl, _ := f[3].(int64)
	stamp, ok := parseHex16(st)
	if !ok {
		return nil, fmt.Errorf("%w: stamp %q", ErrCorrupt, st)
	}
	pairs, ok := s.parseTagList(tl)
	if !ok {
		return nil, fmt.Errorf("%w: tag list", ErrCorrupt)
	}
	res, err := DecodeResult(v)
	if err != nil {
		return nil, err
	}
	tags := make([]Tag, len(pairs))
	for i, p := range pairs {
		tags[i] = Tag(p[1])
	}
	return &redisEntry{result: res, stamp: LSN(stamp), tags: tags, ttl: time.Duration(pttl) * time.Millisecond}, nil
}

func (s *Redis) deleteEntry(ctx context.Context, key string) {
	_ = s.call(ctx, s.cfg.SetTimeout, func(ctx context.Context) error {
		return s.client.Del(ctx, s.entryPre+key).Err()
	})
}

func (s *Redis) getOneSlot(ctx context.Context, key string, watermark LSN) (string, []any, error) {
	reply, err := getOneSlot.Run(ctx, s.client, []string{s.entryPre + key, s.metaKey},
		s.bucketPre, s.bucketPost, s.nBuckets, hex16(uint64(watermark))).Slice()
	if err != nil {
		return "", nil, err
	}
	status, _ := reply[0].(string)
	if len(reply) > 1 {
		if e, ok := reply[1].(string); ok {
			s.learnEpoch(e)
		}
	}
	if status == "hit" {
		return status, reply[2:], nil
	}
	return status, nil, nil
}

// getSpread reads the entry and meta, then the tags' buckets, each round pipelined.
func (s *Redis) getSpread(ctx context.Context, key string, watermark LSN) (string, []any, error) {
	ek := s.entryPre + key
	var ent, meta *redis.SliceCmd
	var pttl *redis.DurationCmd
	_, _ = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		ent = p.HMGet(ctx, ek, "v", "s", "e", "t")
		pttl = p.PTTL(ctx, ek)
		meta = p.HMGet(ctx, s.metaKey, "e", "w", "n")
		return nil
	})
	if err := meta.Err(); err != nil {
		return "", nil, err
	}
	if err := ent.Err(); err != nil {
		if redis.HasErrorPrefix(err, "WRONGTYPE") {
			return "corrupt", nil, s.client.Del(ctx, ek).Err()
		}
		return "", nil, err
	}
	if err := pttl.Err(); err != nil {
		return "", nil, err
	}
	m := meta.Val()
	e, _ := m[0].(string)
	w, _ := m[1].(string)
	n, _ := m[2].(string)
	if e == "" || n != s.nBuckets {
		return "noepoch", nil, nil
	}
	s.learnEpoch(e)
	if w == "" || w < hex16(uint64(watermark)) {
		return "behind", nil, nil
	}
	v := ent.Val()
	if v[0] == nil {
		return "miss", nil, nil
	}
	value, _ := v[0].(string)
	stamp, _ := v[1].(string)
	ee, _ := v[2].(string)
	tl, _ := v[3].(string)
	if ee != e || len(stamp) != 16 {
		return "invalid", nil, s.client.Del(ctx, ek).Err()
	}
	pairs, ok := s.parseTagList(tl)
	if !ok {
		return "corrupt", nil, s.client.Del(ctx, ek).Err()
	}
	maxLSN, lost, err := s.bucketsMax(ctx, e, pairs)
	if err != nil {
		return "", nil, err
	}
	if lost {
		return "lost", nil, s.client.Del(ctx, ek).Err()
	}
	if maxLSN > stamp {
		return "invalid", nil, s.client.Del(ctx, ek).Err()
	}
	return "hit", []any{value, stamp, tl, pttl.Val().Milliseconds()}, nil
}

// bucketsMax returns the highest last-invalidation LSN (hex) of the tags, one
// pipelined script per bucket, or lost when a bucket is not of generation e.
func (s *Redis) bucketsMax(ctx context.Context, e string, pairs [][2]string) (string, bool, error) {
	byBucket := make(map[string][]any)
	var order []string
	for _, p := range pairs {
		if _, ok := byBucket[p[0]]; !ok {
			order = append(order, p[0])
			byBucket[p[0]] = []any{e}
		}
		byBucket[p[0]] = append(byBucket[p[0]], p[1])
	}
	replies, err := s.pipelineScript(ctx, bucketLookup, len(order), func(i int) ([]string, []any) {
		cur, old := s.bucketKeys(order[i])
		return []string{cur, old}, byBucket[order[i]]
	})
	if err != nil {
		return "", false, err
	}
	max := hex16(0)
	for _, r := range replies {
		v, _ := r.(string)
		if v == "lost" || len(v) != 16 {
			return "", true, nil
		}
		if v > max {
			max = v
		}
	}
	return max, false, nil
}

// pipelineScript runs script n times in one pipeline (keys and args of run i from
// args(i)) and returns the replies. Scripts not yet loaded on a server are loaded
// and the pipeline retried once.
func (s *Redis) pipelineScript(ctx context.Context, script *redis.Script, n int, args func(i int) ([]string, []any)) ([]any, error) {
	if n == 0 {
		return nil, nil
	}
	for attempt := 0; ; attempt++ {
		cmds := make([]*redis.Cmd, n)
		_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range cmds {
				keys, a := args(i)
				cmds[i] = script.EvalSha(ctx, p, keys, a...)
			}
			return nil
		})
		if err != nil && attempt == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if err := script.Load(ctx, s.client).Err(); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		out := make([]any, n)
		for i, c := range cmds {
			out[i] = c.Val()
		}
		return out, nil
	}
}

// Set implements Store.
func (s *Redis) Set(ctx context.Context, key string, e Entry) error {
	if err := e.validate(); err != nil {
		return err
	}
	value := EncodeResult(nil, e.Result)
	tags := s.tagList(e.Tags)
	ttl := strconv.FormatInt(max(e.TTL.Milliseconds(), 1), 10)
	stamp := hex16(uint64(e.Stamp.Watermark))
	epoch := hex16(e.Stamp.shared)
	var status string
	err := s.call(ctx, s.cfg.SetTimeout, func(ctx context.Context) error {
		var err error
		if s.spread {
			status, err = s.setSpread(ctx, key, epoch, stamp, ttl, value, tags)
		} else {
			s.hooks.beforeStore(key)
			var reply []any
			reply, err = setOneSlot.Run(ctx, s.client, []string{s.entryPre + key, s.metaKey},
				s.bucketPre, s.bucketPost, s.nBuckets, epoch, stamp, ttl, value, tags).Slice()
			if err == nil {
				status, _ = reply[0].(string)
				if len(reply) > 1 {
					if ep, ok := reply[1].(string); ok {
						s.learnEpoch(ep)
					}
				}
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	switch status {
	case "ok":
		s.stats.fillsL2.Add(1)
		return nil
	case "stale", "epoch":
		s.stats.staleFills.Add(1)
		return ErrStaleFill
	case "noepoch", "lost":
		// No generation yet, or tag state was lost: start a new generation. This fill
		// was stamped in the old one, so it is not stored either way.
		if status == "lost" {
			s.stats.staleFills.Add(1)
		}
		if err := s.repair(ctx, false); err != nil {
			return err
		}
		return ErrStaleFill
	case "badtags":
		return fmt.Errorf("querycache: Redis refused the tag list of %q", key)
	default:
		return fmt.Errorf("querycache: Redis fill of %q: unexpected reply %q", key, status)
	}
}

// setSpread checks the fill against meta and the buckets, then writes it: two round
// trips. An invalidation between the two makes the entry born invalid, and reads
// check again.
func (s *Redis) setSpread(ctx context.Context, key string, epoch, stamp, ttl string, value []byte, tags string) (string, error) {
	m, err := s.client.HMGet(ctx, s.metaKey, "e", "n").Result()
	if err != nil {
		return "", err
	}
	cur, _ := m[0].(string)
	n, _ := m[1].(string)
	if cur == "" || n != s.nBuckets {
		return "noepoch", nil
	}
	s.learnEpoch(cur)
	if cur != epoch {
		return "epoch", nil
	}
	pairs, _ := s.parseTagList(tags)
	maxLSN, lost, err := s.bucketsMax(ctx, cur, pairs)
	if err != nil {
		return "", err
	}
	if lost {
		return "lost", nil
	}
	if maxLSN > stamp {
		return "stale", nil
	}
	s.hooks.beforeStore(key)
	return "ok", setEntry.Run(ctx, s.client, []string{s.entryPre + key}, value, stamp, cur, tags, ttl).Err()
}

// Apply implements Store. An error leaves the store poisoned: the Redis watermark
// does not advance until a new generation has been started, which the next Apply
// attempts first; so when a later Apply returns nil, the failed batch no longer
// matters (see Cache.Apply for what the caller may acknowledge).
func (s *Redis) Apply(ctx context.Context, inv Invalidation) error {
	if err := inv.validate(); err != nil {
		return err
	}
	if inv.Flush || s.poisoned.Load() {
		if err := s.repair(ctx, true); err != nil {
			s.poisoned.Store(true)
			return fmt.Errorf("querycache: Redis flush: %w", err)
		}
		s.poisoned.Store(false)
	}
	if len(inv.Tags) > 0 {
		if err := s.applyTags(ctx, inv.Tags, inv.Commit); err != nil {
			s.poisoned.Store(true)
			return fmt.Errorf("querycache: Redis invalidation at %X: %w", uint64(inv.Commit), err)
		}
	}
	if inv.Watermark != 0 {
		if err := s.advance(ctx, inv.Watermark, inv.Flush); err != nil {
			return fmt.Errorf("querycache: Redis watermark: %w", err)
		}
	}
	return nil
}

// advance writes the Redis watermark. If Redis has lost a watermark this process
// wrote, it lost the invalidations before it too: start a new generation, then
// write it.
func (s *Redis) advance(ctx context.Context, w LSN, force bool) error {
	for attempt := 0; ; attempt++ {
		f := "0"
		if force {
			f = "1"
		}
		var reply string
		err := s.call(ctx, s.cfg.ApplyTimeout, func(ctx context.Context) error {
			var err error
			reply, err = advanceWatermark.Run(ctx, s.client, []string{s.metaKey},
				hex16(uint64(w)), f, hex16(s.written.Load())).Text()
			return err
		})
		if err != nil {
			return err
		}
		if reply == "ok" {
			if force {
				s.written.Store(uint64(w))
			} else {
				for cur := s.written.Load(); uint64(w) > cur && !s.written.CompareAndSwap(cur, uint64(w)); cur = s.written.Load() {
				}
			}
			return nil
		}
		if attempt > 0 {
			return fmt.Errorf("querycache: Redis answered %q", reply)
		}
		s.cfg.Logger.Warn("pgcache: Redis lost writes (failover or restore?); starting a new cache generation",
			"prefix", s.cfg.Prefix)
		if err := s.repair(ctx, true); err != nil {
			s.poisoned.Store(true)
			return err
		}
		force = true
	}
}

func (s *Redis) applyTags(ctx context.Context, tags []Tag, commit LSN) error {
	byBucket := make(map[string][]any)
	var order []string
	for _, t := range tags {
		b := strconv.Itoa(s.bucketOf(t))
		if _, ok := byBucket[b]; !ok {
			order = append(order, b)
		}
		byBucket[b] = append(byBucket[b], string(t))
	}
	lsn := hex16(uint64(commit))
	per := strconv.Itoa(s.cfg.TagsPerBucket)
	var epoch string
	var lost bool
	err := s.call(ctx, s.cfg.ApplyTimeout, func(ctx context.Context) error {
		m, err := s.client.HMGet(ctx, s.metaKey, "e", "n").Result()
		if err != nil {
			return err
		}
		epoch, _ = m[0].(string)
		if n, _ := m[1].(string); epoch == "" || n != s.nBuckets {
			lost = true
			return nil
		}
		replies, err := s.pipelineScript(ctx, bucketApply, len(order), func(i int) ([]string, []any) {
			cur, old := s.bucketKeys(order[i])
			return []string{cur, old}, append([]any{epoch, lsn, per}, byBucket[order[i]]...)
		})
		for _, r := range replies {
			if r != "ok" {
				lost = true
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	if !lost {
		s.learnEpoch(epoch)
		return nil
	}
	// A lost bucket or meta: entries depending on it are already invalid. Start a new
	// generation; the tags need no applying in it (every fill of the new generation
	// reads after this commit).
	return s.repair(ctx, false)
}

// repair makes sure a complete generation exists: meta with a generation and the
// bucket count, and every bucket of that generation. If anything is missing, or
// force is set, it starts a new generation: a random id, every bucket reset, then
// meta updated. Repairs from all instances are serialized by a lock key (with a
// TTL, in case its holder dies); a repair waits for the lock within its timeout.
//
// Safety does not depend on the lock: a generation id is never reused, buckets are
// reset before meta names the new generation, and a bucket not of the reader's
// generation makes the read a miss. Two repairs racing can only cause another
// repair.
func (s *Redis) repair(ctx context.Context, force bool) error {
	s.repairMu.Lock()
	defer s.repairMu.Unlock()
	return s.call(ctx, s.cfg.ApplyTimeout, func(ctx context.Context) error {
		token := hex16(randomUint64())
		for {
			ok, err := s.client.SetNX(ctx, s.lockKey, token, repairLockTTL).Result()
			if err != nil {
				return err
			}
			if ok {
				break
			}
			select {
			case <-ctx.Done():
				return errRepairBusy
			case <-time.After(20 * time.Millisecond):
			}
		}
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.SetTimeout)
			defer cancel()
			_ = releaseLock.Run(rctx, s.client, []string{s.lockKey}, token).Err()
		}()

		m, err := s.client.HMGet(ctx, s.metaKey, "e", "n").Result()
		if err != nil {
			return err
		}
		cur, _ := m[0].(string)
		oldN, _ := m[1].(string)
		if !force && cur != "" && oldN == s.nBuckets {
			complete, err := s.bucketsOf(ctx, cur)
			if err != nil || complete {
				if complete {
					s.learnEpoch(cur)
				}
				return err
			}
		}
		next := randomUint64()
		for next == 0 {
			next = randomUint64()
		}
		ne := hex16(next)
		_, err = s.pipelineScript(ctx, bucketReset, s.cfg.TagBuckets, func(i int) ([]string, []any) {
			cur, old := s.bucketKeys(strconv.Itoa(i))
			return []string{cur, old}, []any{ne}
		})
		if err != nil {
			return err
		}
		// Buckets of a larger former bucket count would linger forever: drop them.
		if n, err := strconv.Atoi(oldN); err == nil && n > s.cfg.TagBuckets && n <= maxRedisTagBuckets {
			_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i := s.cfg.TagBuckets; i < n; i++ {
					cur, old := s.bucketKeys(strconv.Itoa(i))
					p.Del(ctx, cur, old)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if err := s.client.HSet(ctx, s.metaKey, "e", ne, "n", s.nBuckets).Err(); err != nil {
			return err
		}
		s.learnEpoch(ne)
		s.stats.flushes.Add(1)
		if cur != "" && !force {
			s.cfg.Logger.Warn("pgcache: Redis lost tag invalidation state (evicted?); started a new cache generation",
				"prefix", s.cfg.Prefix)
		}
		return nil
	})
}

// Prepare makes sure Redis holds a complete generation, and learns it. Calling it
// is optional (the store does the same on its first fill), but a store used without
// it rejects its first fills: their stamps carry no generation.
func (s *Redis) Prepare(ctx context.Context) error { return s.repair(ctx, false) }

// bucketsOf reports whether every bucket exists and belongs to generation e.
func (s *Redis) bucketsOf(ctx context.Context, e string) (bool, error) {
	var cmds []*redis.StringCmd
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := 0; i < s.cfg.TagBuckets; i++ {
			cur, old := s.bucketKeys(strconv.Itoa(i))
			cmds = append(cmds, p.HGet(ctx, cur, "_e"), p.HGet(ctx, old, "_e"))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	for _, c := range cmds {
		if c.Val() != e {
			return false, nil
		}
	}
	return true, nil
}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

// Stamp implements Store.
func (s *Redis) Stamp(watermark LSN) Stamp {
	return Stamp{Watermark: watermark, shared: s.epoch.Load()}
}

// Close implements Store. It does not close the client, which belongs to the caller.
func (s *Redis) Close() error {
	s.closed.Store(true)
	return nil
}

// Stats returns the store's counters.
func (s *Redis) Stats() Stats { return s.stats.snapshot() }
