package querycache_test

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"

	"github.com/pgcache/pgcache/querycache"
)

// The read path as the driver runs it, and an invalidation from the change stream,
// with the in-process store only.
func ExampleCache() {
	ctx := context.Background()
	health := querycache.HealthFunc(func() querycache.Health { return querycache.Health{Healthy: true} })
	// The watermark covers only commits visible to new snapshots (as the
	// driver's change stream confirms), so stamps need not lag it.
	cache, err := querycache.New(querycache.Config{Health: health, VisibilityGrace: -1})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	// The change stream has applied everything up to LSN 100.
	_ = cache.Apply(ctx, querycache.Invalidation{Watermark: 100})

	const key = "9f86d081884c7d659a2feaa0c55ad015" // the analyzer's key of the query and its arguments
	tags := []querycache.Tag{"public.users:id=42"} // and its tags

	read := func() {
		if res, hit := cache.Lookup(ctx, key); hit {
			rows := res.Rows() // what the driver returns to database/sql
			dest := make([]driver.Value, len(rows.Columns()))
			_ = rows.Next(dest)
			fmt.Println("hit:", dest[0])
			return
		}
		stamp := cache.Stamp() // before the database read
		// ... run the query on PostgreSQL, streaming the rows to the caller ...
		b := cache.NewResultBuilder([]querycache.Column{{Name: "name", ScanType: querycache.ScanTypeString}})
		_ = b.Add([]driver.Value{"alice"})
		res, err := b.Result()
		if err != nil {
			return // over the limits: not cached
		}
		fmt.Println("miss:", cache.Store(ctx, key, res, tags, stamp, time.Minute))
	}

	read()
	read()
	// A transaction committed at LSN 120 changed the row: the change stream applies
	// its invalidation and advances the watermark.
	_ = cache.Apply(ctx, querycache.Invalidation{Tags: tags, Commit: 120, Watermark: 120})
	read()
	read()
	// Output:
	// miss: <nil>
	// hit: alice
	// miss: <nil>
	// hit: alice
}

// A fill whose database read raced an invalidation is never visible.
func ExampleCache_staleFill() {
	ctx := context.Background()
	health := querycache.HealthFunc(func() querycache.Health { return querycache.Health{Healthy: true} })
	cache, _ := querycache.New(querycache.Config{Health: health, VisibilityGrace: -1})
	defer cache.Close()
	_ = cache.Apply(ctx, querycache.Invalidation{Watermark: 100})
	tags := []querycache.Tag{"public.users:id=42"}

	stamp := cache.Stamp() // a reader stamps and reads version 1 ...
	// ... a writer commits version 2 at LSN 110, and its invalidation is applied ...
	_ = cache.Apply(ctx, querycache.Invalidation{Tags: tags, Commit: 110, Watermark: 110})
	// ... then the reader stores version 1.
	b := cache.NewResultBuilder([]querycache.Column{{Name: "version", ScanType: querycache.ScanTypeInt64}})
	_ = b.Add([]driver.Value{int64(1)})
	res, _ := b.Result()
	fmt.Println(cache.Store(ctx, "key", res, tags, stamp, time.Minute))
	_, hit := cache.Lookup(ctx, "key")
	fmt.Println("hit:", hit, "stale fills:", cache.Stats().StaleFills)
	// Output:
	// querycache: stale fill rejected
	// hit: false stale fills: 1
}
