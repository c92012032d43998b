package querycache

import (
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// EnvRedisCluster names the nodes of a Redis Cluster ("host:port,host:port,...") to
// run the store contract on; pgcachetest has no cluster, so these tests are skipped
// without it.
const EnvRedisCluster = "PGCACHE_TEST_REDIS_CLUSTER"

func clusterClient(t *testing.T) *redis.ClusterClient {
	t.Helper()
	addrs := os.Getenv(EnvRedisCluster)
	if addrs == "" {
		t.Skip(EnvRedisCluster + " not set")
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// TestStoreContractCluster runs the store contract on a Redis Cluster in both
// layouts: spread (the default for a cluster client) and forced into one slot.
func TestStoreContractCluster(t *testing.T) {
	client := clusterClient(t)
	for _, layout := range []struct {
		name   string
		layout RedisLayout
	}{{"auto", LayoutAuto}, {"oneSlot", LayoutOneSlot}} {
		t.Run(layout.name, func(t *testing.T) {
			for _, tc := range contractCases {
				t.Run(tc.name, func(t *testing.T) {
					r := newTestRedis(t, client, layout.layout, tc.opts)
					if want := layout.layout == LayoutAuto; r.spread != want {
						t.Fatalf("spread = %v", r.spread)
					}
					tc.run(t, newHarness(t, testStore{Store: r, redis: r}))
				})
			}
		})
	}
}
