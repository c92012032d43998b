package querycache

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/pgcachetest"
)

// The hot path: a one-row, five-column point query answered from the cache.

func pointColumns() []Column {
	return []Column{
		{Name: "id", TypeOID: 20, DatabaseTypeName: "INT8", ScanType: ScanTypeInt64},
		{Name: "name", TypeOID: 25, DatabaseTypeName: "TEXT", Length: math.MaxInt64, HasLength: true, ScanType: ScanTypeString},
		{Name: "score", TypeOID: 701, DatabaseTypeName: "FLOAT8", ScanType: ScanTypeFloat64},
		{Name: "active", TypeOID: 16, DatabaseTypeName: "BOOL", ScanType: ScanTypeBool},
		{Name: "created", TypeOID: 1184, DatabaseTypeName: "TIMESTAMPTZ", ScanType: ScanTypeTime},
	}
}

func pointRow() []driver.Value {
	return []driver.Value{int64(42), "alice", 3.5, true, time.Unix(1700000000, 0)}
}

func pointResult(tb testing.TB) *Result {
	b := NewResultBuilder(pointColumns(), Limits{})
	if err := b.Add(pointRow()); err != nil {
		tb.Fatal(err)
	}
	r, err := b.Result()
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// pointKey is shaped like the analyzer's keys: a 128-bit hash in hex.
const pointKey = "9f86d081884c7d659a2feaa0c55ad015"

var pointTags = []Tag{"public.users:id=42"}

func benchCache(b *testing.B, cfg Config) *Cache {
	b.Helper()
	cfg.Health = healthy
	cfg.VisibilityGrace = -1
	c, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if c.tiered != nil {
		if err := c.tiered.l2.Prepare(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Apply(ctx, Invalidation{Watermark: 10}); err != nil {
		b.Fatal(err)
	}
	if err := c.Store(ctx, pointKey, pointResult(b), pointTags, c.Stamp(), time.Hour); err != nil {
		b.Fatal(err)
	}
	return c
}

// replayAll reads every row of a hit the way database/sql does.
func replayAll(b *testing.B, res *Result, dest []driver.Value) {
	rows := res.Rows()
	defer rows.Close()
	_ = rows.Columns()
	for {
		if err := rows.Next(dest); err != nil {
			if err != io.EOF {
				b.Fatal(err)
			}
			return
		}
	}
}

// benchLookupHits looks pointKey up, which must hit, and replays its rows.
func benchLookupHits(b *testing.B, c *Cache, dest []driver.Value) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		res, hit := c.Lookup(ctx, pointKey)
		if !hit {
			b.Fatal("miss")
		}
		replayAll(b, res, dest)
	}
}

// BenchmarkL1Lookup: Cache.Lookup answered by L1, and the replay of its row.
func BenchmarkL1Lookup(b *testing.B) {
	c := benchCache(b, Config{})
	ctx := context.Background()
	dest := make([]driver.Value, 5)
	b.Run("serial", func(b *testing.B) { benchLookupHits(b, c, dest) })
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			dest := make([]driver.Value, 5)
			for pb.Next() {
				res, hit := c.Lookup(ctx, pointKey)
				if !hit {
					panic("miss")
				}
				rows := res.Rows()
				for rows.Next(dest) == nil {
				}
				rows.Close()
			}
		})
	})
}

// BenchmarkMissOverhead is what a miss adds to a database read: a lookup, a stamp,
// building the result while streaming it, and storing it in L1.
func BenchmarkMissOverhead(b *testing.B) {
	c := benchCache(b, Config{})
	ctx := context.Background()
	cols := pointColumns()
	row := pointRow()
	b.ReportAllocs()
	for b.Loop() {
		if _, hit := c.Lookup(ctx, "absent"); hit {
			b.Fatal("hit")
		}
		st := c.Stamp()
		rb := c.NewResultBuilder(cols)
		if err := rb.Add(row); err != nil {
			b.Fatal(err)
		}
		res, err := rb.Result()
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Store(ctx, pointKey, res, pointTags, st, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisLookup: a read answered by Redis (decoding included), in both
// layouts, next to a plain GET of a value of the same size on the same connection
// pool: the round trip every Redis read pays.
func BenchmarkRedisLookup(b *testing.B) {
	client := directRedisClient(b)
	ctx := context.Background()
	enc := EncodeResult(nil, pointResult(b))
	if err := client.Set(ctx, "bench:plain", enc, time.Hour).Err(); err != nil {
		b.Fatal(err)
	}
	b.Run("GET", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := client.Get(ctx, "bench:plain").Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, layout := range []struct {
		name   string
		layout RedisLayout
	}{{"oneSlot", LayoutOneSlot}, {"spread", LayoutSpread}} {
		b.Run(layout.name, func(b *testing.B) {
			r, err := NewRedis(client, RedisConfig{Prefix: "b" + randomHex(4), Layout: layout.layout})
			if err != nil {
				b.Fatal(err)
			}
			if err := r.Prepare(ctx); err != nil {
				b.Fatal(err)
			}
			if err := r.Apply(ctx, Invalidation{Watermark: 10}); err != nil {
				b.Fatal(err)
			}
			if err := r.Set(ctx, pointKey, Entry{Result: pointResult(b), Tags: pointTags, Stamp: r.Stamp(10), TTL: time.Hour}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				res, err := r.Get(ctx, pointKey, 10)
				if err != nil || res == nil {
					b.Fatal("miss", err)
				}
			}
		})
	}
}

// directRedisClient is a client of the shared Redis at its container's own address
// where it can (Docker's port proxy adds tens of µs to every round trip).
func directRedisClient(b *testing.B) *redis.Client {
	b.Helper()
	rd := pgcachetest.SharedRedis(b)
	url, err := rd.DirectURL(context.Background())
	if err != nil {
		b.Logf("Redis through its published port: %v", err)
		url = rd.URL()
	}
	return redisClient(b, url)
}

// BenchmarkTieredLookup: through Cache with Redis behind L1, a hit in L1, and a
// read that misses L1 and is answered by Redis (copied back into L1).
func BenchmarkTieredLookup(b *testing.B) {
	c := benchCache(b, Config{Redis: sharedRedisClient(b), Tiered: TieredConfig{WriteQueue: -1},
		RedisConfig: RedisConfig{Prefix: "b" + randomHex(4)}})
	ctx := context.Background()
	dest := make([]driver.Value, 5)
	b.Run("L1", func(b *testing.B) { benchLookupHits(b, c, dest) })
	b.Run("L2", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.tiered.l1.cache.Invalidate(pointKey)
			res, hit := c.Lookup(ctx, pointKey)
			if !hit {
				b.Fatal("miss")
			}
			replayAll(b, res, dest)
		}
	})
}

// BenchmarkDatabaseSQL measures an L1 hit through database/sql against the floor
// any database/sql driver pays: a do-nothing driver returning the same row. The
// driver's own work (parsing directives, the plan cache, the key hash) is not
// here; this is the store's and the replay's share.
func BenchmarkDatabaseSQL(b *testing.B) {
	c := benchCache(b, Config{})
	benchDriver.Lock()
	benchDriver.cache = c
	benchDriver.Unlock()
	for _, name := range []string{"canned", "cached"} {
		b.Run(name, func(b *testing.B) {
			db, err := sql.Open("querycache-bench", name)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			var (
				id      int64
				user    string
				score   float64
				active  bool
				created time.Time
			)
			b.ReportAllocs()
			for b.Loop() {
				if err := db.QueryRow(pointKey).Scan(&id, &user, &score, &active, &created); err != nil {
					b.Fatal(err)
				}
			}
			if user != "alice" {
				b.Fatal(user)
			}
		})
	}
}

var benchDriver = struct {
	sync.Mutex
	cache *Cache
}{}

func init() { sql.Register("querycache-bench", benchSQLDriver{}) }

type benchSQLDriver struct{}

func (benchSQLDriver) Open(name string) (driver.Conn, error) {
	benchDriver.Lock()
	defer benchDriver.Unlock()
	return &benchConn{cached: name == "cached", cache: benchDriver.cache}, nil
}

type benchConn struct {
	cached bool
	cache  *Cache
}

func (*benchConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("not supported") }
func (*benchConn) Close() error                        { return nil }
func (*benchConn) Begin() (driver.Tx, error)           { return nil, errors.New("not supported") }

func (c *benchConn) QueryContext(ctx context.Context, query string, _ []driver.NamedValue) (driver.Rows, error) {
	if !c.cached {
		return &cannedRows{}, nil
	}
	res, hit := c.cache.Lookup(ctx, query)
	if !hit {
		return nil, errors.New("miss")
	}
	return res.Rows(), nil
}

// cannedRows is the do-nothing driver's answer: the same row and column types,
// from static data.
type cannedRows struct{ done bool }

var (
	cannedNames = []string{"id", "name", "score", "active", "created"}
	cannedRow   = pointRow()
)

func (*cannedRows) Columns() []string { return cannedNames }
func (*cannedRows) Close() error      { return nil }
func (r *cannedRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	copy(dest, cannedRow)
	return nil
}
