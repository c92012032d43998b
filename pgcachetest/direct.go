package pgcachetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// Where the host can reach containers at their own addresses (Linux, or a test
// process running in the Docker daemon's network namespace), a connection to the
// container's IP skips Docker's userland port proxy, which adds tens of
// microseconds to every round trip. Latency benchmarks want that; tests do not
// care, and should keep using URL, which works everywhere.

// errNotContainer: an external server has no container address.
var errNotContainer = errors.New("pgcachetest: the server is not a container this package started")

// directDialTimeout bounds the check that a container address is reachable.
const directDialTimeout = time.Second

// DirectURL returns dsn, a URL of this server (URL, or one NewDatabase returned),
// rewritten to reach the container at its own IP address and PostgreSQL's own
// port. It fails for an external server, a key=value DSN, or when that address
// does not accept connections from here; callers then use dsn as it is.
func (p *Postgres) DirectURL(ctx context.Context, dsn string) (string, error) {
	if p.container == nil {
		return "", errNotContainer
	}
	return directURL(ctx, p.container, "5432", dsn)
}

// DirectURL returns URL rewritten to reach the container at its own IP address
// and Redis's own port (see Postgres.DirectURL).
func (r *Redis) DirectURL(ctx context.Context) (string, error) {
	if r.container == nil {
		return "", errNotContainer
	}
	return directURL(ctx, r.container, "6379", r.url)
}

func directURL(ctx context.Context, c testcontainers.Container, port, rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("pgcachetest: not a URL with a host: %q", rawURL)
	}
	ip, err := c.ContainerIP(ctx)
	if err != nil {
		return "", fmt.Errorf("pgcachetest: container address: %w", err)
	}
	if ip == "" {
		return "", errors.New("pgcachetest: the container has no IP address")
	}
	addr := net.JoinHostPort(ip, port)
	d := net.Dialer{Timeout: directDialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("pgcachetest: the container's own address is not reachable from here: %w", err)
	}
	_ = conn.Close()
	u.Host = addr
	return u.String(), nil
}
