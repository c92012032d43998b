package integration_test

import (
	"context"
	"database/sql"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/pgcachetest"
)

// sharedInstances opens n *sql.DB on dsn sharing the Redis at redisURL, as n
// application instances would, and waits until each uses its cache.
func sharedInstances(t *testing.T, dsn, redisURL string, n int) []*sql.DB {
	t.Helper()
	instances := make([]*sql.DB, n)
	for i := range instances {
		instances[i] = openDB(t, "pgcache", withParams(dsn, "pgcache_redis="+url.QueryEscape(redisURL)))
	}
	for _, db := range instances {
		waitStreaming(t, db)
	}
	return instances
}

// leaderOf returns the index of the instance that consumes the change stream.
func leaderOf(t *testing.T, instances []*sql.DB, alive func(int) bool) (int, bool) {
	t.Helper()
	for i, db := range instances {
		if alive(i) && strings.HasPrefix(stats(t, db).Stream, "leading") {
			return i, true
		}
	}
	return -1, false
}

// kvWorkload writes to kv from a plain pgx connection and reads it through the
// instances until stop is closed.
func kvWorkload(t *testing.T, ctx context.Context, dsn string, instances func() []*sql.DB, stop <-chan struct{}) *sync.WaitGroup {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if _, err := conn.Exec(ctx, `UPDATE kv SET v = v + 1 WHERE k = $1`, rand.IntN(50)+1); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				dbs := instances()
				db := dbs[(r+rand.IntN(len(dbs)))%len(dbs)]
				var v int
				err := db.QueryRowContext(ctx, `SELECT v FROM kv WHERE k = $1`, rand.IntN(50)+1).Scan(&v)
				if err != nil && !strings.Contains(err.Error(), "database is closed") {
					t.Errorf("read through an instance: %v", err)
					return
				}
			}
		}()
	}
	return &wg
}

// checkCoherent reads every row through every instance once they have applied all
// committed changes: each must give the database's value.
func checkCoherent(t *testing.T, ctx context.Context, admin *sql.DB, instances []*sql.DB) {
	t.Helper()
	truth := map[int]int{}
	rows, err := admin.QueryContext(ctx, `SELECT k, v FROM kv`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, v int
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		truth[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for i, db := range instances {
		waitStreaming(t, db)
		waitApplied(t, db, admin)
		for k, want := range truth {
			var got int
			if err := db.QueryRowContext(ctx, `SELECT v FROM kv WHERE k = $1`, k).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("instance %d, k=%d: read %d, the database has %d (stale); %+v", i, k, got, want, stats(t, db))
			}
		}
	}
}

// TestSharedLeaderFailover runs three instances sharing Redis under a write and read
// load, kills the leader mid-stream (its sessions terminated, the instance gone),
// and checks that another instance takes over and that, once caught up, no instance
// serves a stale row.
func TestSharedLeaderFailover(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, `CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL)`,
		`INSERT INTO kv SELECT i, 0 FROM generate_series(1, 50) i`)
	instances := sharedInstances(t, dsn, pgcachetest.SharedRedis(t).URL(), 3)

	var mu sync.Mutex
	dead := map[int]bool{}
	alive := func(i int) bool { mu.Lock(); defer mu.Unlock(); return !dead[i] }
	living := func() []*sql.DB {
		mu.Lock()
		defer mu.Unlock()
		var out []*sql.DB
		for i, db := range instances {
			if !dead[i] {
				out = append(out, db)
			}
		}
		return out
	}
	var leader int
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ok bool
		if leader, ok = leaderOf(t, instances, alive); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(50 * time.Millisecond)
	}

	stop := make(chan struct{})
	wg := kvWorkload(t, ctx, dsn, living, stop)
	time.Sleep(time.Second)

	// Kill the leader: its lock session and its walsender end as if its host died,
	// and the instance is gone.
	mu.Lock()
	dead[leader] = true
	mu.Unlock()
	var killed int
	if err := admin.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()
		  AND (application_name = 'pgcache-cdc' OR pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory'))`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	_ = instances[leader].Close()
	t.Logf("killed leader %d (%d sessions)", leader, killed)

	deadline = time.Now().Add(60 * time.Second)
	for {
		if next, ok := leaderOf(t, instances, alive); ok {
			t.Logf("instance %d took over", next)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new leader within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // writes continue under the new leader
	close(stop)
	wg.Wait()
	checkCoherent(t, ctx, admin, living())
}

// TestSharedRedisOutage stops Redis under load: no query fails, reads go to
// PostgreSQL, and when Redis is back the instances cache again, coherently.
func TestSharedRedisOutage(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	rd, err := pgcachetest.StartRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Terminate(context.Background()) })
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, `CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL)`,
		`INSERT INTO kv SELECT i, 0 FROM generate_series(1, 50) i`)
	instances := sharedInstances(t, dsn, rd.URL(), 2)

	stop := make(chan struct{})
	wg := kvWorkload(t, ctx, dsn, func() []*sql.DB { return instances }, stop)
	time.Sleep(time.Second)
	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // reads and writes go on without Redis
	for i, db := range instances {
		if st := stats(t, db); st.Usable {
			t.Errorf("instance %d still uses its cache with Redis down: %+v", i, st)
		}
	}
	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	checkCoherent(t, ctx, admin, instances)
	for i, db := range instances {
		before := stats(t, db).HitsL1 + stats(t, db).HitsL2
		for range 3 {
			var v int
			if err := db.QueryRowContext(ctx, `SELECT v FROM kv WHERE k = $1`, 1).Scan(&v); err != nil {
				t.Fatal(err)
			}
		}
		if st := stats(t, db); st.HitsL1+st.HitsL2 == before {
			t.Errorf("instance %d does not cache after Redis came back: %+v", i, st)
		}
	}
}
