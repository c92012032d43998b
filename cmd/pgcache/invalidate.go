package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/driver"
	"github.com/pgcache/pgcache/invalidate"
	"github.com/pgcache/pgcache/querycache"
)

func init() {
	register("invalidate", command{
		summary: "run the change-stream consumer of a cache shared through Redis",
		run:     runInvalidate,
	})
}

// runInvalidate runs the consumer role of a shared cache as a process of its own:
// it campaigns with the application instances (or alone, when they run with
// pgcache_follower=true), and while it leads it applies every committed change to
// Redis and fans the invalidations out to the instances.
func runInvalidate(ctx context.Context, stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("invalidate", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dsn := fs.String("dsn", "", "PostgreSQL connection string (a role with REPLICATION)")
	redisURL := fs.String("redis", "", "Redis URL shared with the application: redis://host:6379/0")
	namespace := fs.String("namespace", "", "Redis namespace (default: the driver's, pgcache:<database>)")
	slot := fs.String("slot", "", "persistent replication slot (default: the driver's, pgcache_<database>)")
	publication := fs.String("publication", cdc.DefaultPublication, "publication (created FOR ALL TABLES when missing and allowed)")
	status := fs.Duration("status", 10*time.Second, "how often to log the consumer's state (0: never)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: pgcache invalidate --dsn URL --redis URL [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dsn == "" || *redisURL == "" || fs.NArg() > 0 {
		return &usageError{msg: "--dsn and --redis are required, and nothing else"}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	connConfig, err := pgx.ParseConfig(*dsn)
	if err != nil {
		return fmt.Errorf("--dsn: %w", err)
	}
	opts, err := redis.ParseURL(*redisURL)
	if err != nil {
		return fmt.Errorf("--redis: %w", err)
	}
	opts.ContextTimeoutEnabled = true
	if opts.Protocol == 0 {
		opts.Protocol = 2 // pgcache uses no RESP3 feature
	}
	client := redis.NewClient(opts)
	defer client.Close()
	ns := *namespace
	if ns == "" {
		ns = driver.DefaultRedisNamespace(connConfig.Database)
	}

	cache, err := querycache.New(querycache.Config{Redis: client, RedisConfig: querycache.RedisConfig{Prefix: ns, Logger: log}})
	if err != nil {
		return err
	}
	defer cache.Close()
	schemes, err := invalidate.NewSharedSchemes(invalidate.SharedSchemesConfig{Client: client, Key: ns + ":schemes", Logger: log})
	if err != nil {
		return err
	}
	shared, err := invalidate.NewShared(invalidate.SharedConfig{
		ConnConfig: connConfig,
		Listener:   cdc.Config{Slot: *slot, Publication: *publication, CreatePublication: true},
		Cache:      cache,
		Fanout:     invalidate.FanoutConfig{Client: client, Stream: ns + ":invalidations"},
		Schemes:    schemes,
		LeadOnly:   true,
		Logger:     log,
	})
	if err != nil {
		return err
	}
	log.Info("pgcache invalidate: starting", "database", connConfig.Database, "namespace", ns, "slot", cmp.Or(*slot, cdc.SlotFor(connConfig.Database)), "publication", *publication)
	done := make(chan struct{})
	if *status > 0 {
		go func() {
			tick := time.NewTicker(*status)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
				}
				if h, ok := shared.LeaderHealth(); ok {
					log.Info("pgcache invalidate: leading", "state", h.State.String(), "applied", h.AppliedLSN.String(), "lag", h.LagTime, "last_error", h.LastError)
				} else {
					log.Info("pgcache invalidate: standing by (another instance leads)")
				}
			}
		}()
	}
	err = shared.Run(ctx)
	close(done)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
