package pgcachetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tcredis "github.com/testcontainers/testcontainers-go/modules/redis"
)

// Redis is a Redis server for tests: a container this package started, or an
// external server named by a URL.
type Redis struct {
	container *tcredis.RedisContainer // nil for an external server
	url       string
}

// StartRedis starts a Redis container of its own (image from PGCACHE_TEST_REDIS_IMAGE).
// Its host port stays the same across Stop and Start.
func StartRedis(ctx context.Context) (*Redis, error) {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	image := envOr(EnvRedisImage, DefaultRedisImage)
	c, err := tcredis.Run(ctx, image,
		testcontainers.WithLabels(containerLabels("redis")),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort("6379/tcp"): {{HostPort: strconv.Itoa(port)}},
			}
		}),
	)
	if err != nil {
		if c != nil {
			_ = c.Terminate(context.Background())
		}
		return nil, fmt.Errorf("start Redis from image %q (set %s to use another): %w", image, EnvRedisImage, err)
	}
	u, err := c.ConnectionString(ctx)
	if err != nil {
		_ = c.Terminate(context.Background())
		return nil, err
	}
	r := &Redis{container: c, url: u}
	if err := r.waitReady(ctx); err != nil {
		_ = c.Terminate(context.Background())
		return nil, err
	}
	return r, nil
}

// ExternalRedis uses an existing Redis server.
func ExternalRedis(ctx context.Context, url string) (*Redis, error) {
	r := &Redis{url: url}
	if err := r.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvRedisURL, err)
	}
	return r, nil
}

// URL is the server's redis:// URL.
func (r *Redis) URL() string { return r.url }

// Client returns a new client of the server; the caller closes it.
func (r *Redis) Client() (*redis.Client, error) {
	opts, err := redis.ParseURL(r.url)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

// Stop stops the server's container: commands fail until Start.
func (r *Redis) Stop(ctx context.Context) error {
	if r.container == nil {
		return errors.New("pgcachetest: cannot stop an external server")
	}
	timeout := 5 * time.Second
	return r.container.Stop(ctx, &timeout)
}

// Start starts a stopped container again, on the same port, and waits for it.
func (r *Redis) Start(ctx context.Context) error {
	if r.container == nil {
		return errors.New("pgcachetest: cannot start an external server")
	}
	if err := r.container.Start(ctx); err != nil {
		return err
	}
	return r.waitReady(ctx)
}

// Terminate removes the container. For an external server it does nothing.
func (r *Redis) Terminate(ctx context.Context) error {
	if r.container == nil {
		return nil
	}
	return r.container.Terminate(ctx)
}

func (r *Redis) waitReady(ctx context.Context) error {
	client, err := r.Client()
	if err != nil {
		return err
	}
	defer client.Close()
	var last error
	for {
		if last = client.Ping(ctx).Err(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis not ready: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
