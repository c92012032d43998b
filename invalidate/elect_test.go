package invalidate_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/invalidate"
	"github.com/pgcache/pgcache/pgcachetest"
)

// TestElectorFailover runs three contenders: exactly one leads at any time, and when
// the leader's lock session is killed another one takes over.
func TestElectorFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	connConfig, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}

	var leading, maxLeading, terms atomic.Int32
	leaders := make(chan int, 16)
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 3 {
		e, err := invalidate.NewElector(invalidate.ElectorConfig{
			ConnConfig: connConfig, Name: "failover", Interval: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = e.Run(runCtx, func(ctx context.Context) error {
				n := leading.Add(1)
				defer leading.Add(-1)
				for {
					m := maxLeading.Load()
					if n <= m || maxLeading.CompareAndSwap(m, n) {
						break
					}
				}
				terms.Add(1)
				leaders <- i
				<-ctx.Done()
				return nil
			})
		}()
	}

	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	killLeader := func() {
		t.Helper()
		key := invalidate.LockKey("failover")
		var n int
		err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND objsubid = 1
			  AND classid = (($1::bigint >> 32) & 4294967295)::oid AND objid = ($1::bigint & 4294967295)::oid`, key).Scan(&n)
		if err != nil || n != 1 {
			t.Fatalf("kill the leader's session: killed %d, %v", n, err)
		}
	}

	first := <-leaders
	killLeader()
	var second int
	select {
	case second = <-leaders:
	case <-ctx.Done():
		t.Fatal("no new leader after the first one's session was killed")
	}
	killLeader()
	select {
	case <-leaders:
	case <-ctx.Done():
		t.Fatal("no third leader")
	}
	stop()
	wg.Wait()
	t.Logf("leaders: %d, then %d, then another; %d terms", first, second, terms.Load())
	if got := maxLeading.Load(); got != 1 {
		t.Fatalf("%d instances led at the same time", got)
	}
	if leading.Load() != 0 {
		t.Fatal("a leader is still running after Run returned")
	}
}

func TestElectorConfig(t *testing.T) {
	if _, err := invalidate.NewElector(invalidate.ElectorConfig{Name: "x"}); err == nil {
		t.Error("no error without ConnConfig")
	}
	cc, _ := pgx.ParseConfig("host=localhost")
	if _, err := invalidate.NewElector(invalidate.ElectorConfig{ConnConfig: cc}); err == nil {
		t.Error("no error without Name")
	}
	if _, err := invalidate.NewElector(invalidate.ElectorConfig{ConnConfig: cc, Name: "x", Interval: -1}); err == nil {
		t.Error("no error with a negative interval")
	}
}
