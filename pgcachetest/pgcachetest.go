package pgcachetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Environment variables read by this package.
const (
	EnvPostgresImage = "PGCACHE_TEST_POSTGRES_IMAGE" // default: postgres:17
	EnvRedisImage    = "PGCACHE_TEST_REDIS_IMAGE"    // default: redis:7
	EnvDatabaseURL   = "PGCACHE_TEST_DATABASE_URL"   // an existing server instead of a container
	EnvRedisURL      = "PGCACHE_TEST_REDIS_URL"      // an existing Redis instead of a container
	// EnvRunID labels the containers of one test run (pgcache.test.run=<id>) so a
	// script can remove what a killed test binary left behind without touching
	// the containers of other runs.
	EnvRunID = "PGCACHE_TEST_RUN_ID"
)

// Default images, used when the environment names none.
const (
	DefaultPostgresImage = "postgres:17"
	DefaultRedisImage    = "redis:7"
)

// StartTimeout bounds how long starting one container may take, pulling included.
const StartTimeout = 3 * time.Minute

// shared holds the servers shared by the tests of one package (one test binary).
var shared struct {
	mu       sync.Mutex
	postgres *Postgres
	pgErr    error
	redis    *Redis
	redisErr error
}

// Main runs the tests of a package and then removes the containers they shared.
// Call it from TestMain: os.Exit(pgcachetest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := closeShared(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "pgcachetest:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func closeShared(ctx context.Context) error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	var errs []error
	if shared.postgres != nil {
		errs = append(errs, shared.postgres.Terminate(ctx))
		shared.postgres = nil
	}
	if shared.redis != nil {
		errs = append(errs, shared.redis.Terminate(ctx))
		shared.redis = nil
	}
	return errors.Join(errs...)
}

// SharedPostgres returns the PostgreSQL server shared by the tests of this package,
// starting it on first use (or using PGCACHE_TEST_DATABASE_URL). It fails the test
// when the server cannot be had. Tests should not stop, restart or reconfigure it:
// use NewDatabase for isolation and StartPostgres for a server of their own.
func SharedPostgres(tb testing.TB) *Postgres {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.postgres == nil && shared.pgErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
		defer cancel()
		if url := os.Getenv(EnvDatabaseURL); url != "" {
			shared.postgres, shared.pgErr = ExternalPostgres(ctx, url)
		} else {
			shared.postgres, shared.pgErr = StartPostgres(ctx)
		}
	}
	if shared.pgErr != nil {
		tb.Fatalf("pgcachetest: shared PostgreSQL: %v", shared.pgErr)
	}
	return shared.postgres
}

// SharedRedis returns the Redis server shared by the tests of this package, starting
// it on first use (or using PGCACHE_TEST_REDIS_URL). It fails the test when the
// server cannot be had.
func SharedRedis(tb testing.TB) *Redis {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.redis == nil && shared.redisErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
		defer cancel()
		if url := os.Getenv(EnvRedisURL); url != "" {
			shared.redis, shared.redisErr = ExternalRedis(ctx, url)
		} else {
			shared.redis, shared.redisErr = StartRedis(ctx)
		}
	}
	if shared.redisErr != nil {
		tb.Fatalf("pgcachetest: shared Redis: %v", shared.redisErr)
	}
	return shared.redis
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// containerLabels marks a container as pgcache's, of which server and which run.
func containerLabels(server string) map[string]string {
	return map[string]string{"pgcache.test": server, "pgcache.test.run": os.Getenv(EnvRunID)}
}
