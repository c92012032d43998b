package pgcachetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// PostgresSettings are the server settings every pgcache test server runs with:
// logical replication with room for many slots and senders, and no fsync (tests
// do not need durability across a host crash).
var PostgresSettings = []string{
	"wal_level=logical",
	"max_replication_slots=32",
	"max_wal_senders=32",
	"max_connections=300",
	"fsync=off",
	"synchronous_commit=off",
	"full_page_writes=off",
}

// Postgres is a PostgreSQL server for tests: a container this package started, or an
// external server named by a URL.
type Postgres struct {
	container *tcpostgres.PostgresContainer // nil for an external server
	url       string                        // superuser URL of the default database
}

// StartPostgres starts a PostgreSQL container of its own (image from
// PGCACHE_TEST_POSTGRES_IMAGE) with PostgresSettings plus any extra "name=value"
// settings. Its host port stays the same across Stop and Start, so a DSN taken before
// a restart works after it. The caller terminates it (Terminate, or CleanupContainer).
func StartPostgres(ctx context.Context, settings ...string) (*Postgres, error) {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	var args []string
	for _, s := range append(append([]string(nil), PostgresSettings...), settings...) {
		args = append(args, "-c", s)
	}
	image := envOr(EnvPostgresImage, DefaultPostgresImage)
	c, err := tcpostgres.Run(ctx, image,
		tcpostgres.WithDatabase("pgcache"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		testcontainers.WithCmdArgs(args...),
		testcontainers.WithLabels(containerLabels("postgres")),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort("5432/tcp"): {{HostPort: strconv.Itoa(port)}},
			}
		}),
		// SIGINT is PostgreSQL's fast shutdown, as the official image sets: the
		// default SIGTERM waits for every session to end (and then Docker kills).
		testcontainers.WithConfigModifier(func(c *container.Config) { c.StopSignal = "SIGINT" }),
		tcpostgres.BasicWaitStrategies(),
	)
	if err != nil {
		if c != nil {
			_ = c.Terminate(context.Background())
		}
		return nil, fmt.Errorf("start PostgreSQL from image %q (set %s to use another): %w", image, EnvPostgresImage, err)
	}
	dsn, err := c.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = c.Terminate(context.Background())
		return nil, err
	}
	p := &Postgres{container: c, url: dsn}
	if err := p.waitReady(ctx); err != nil {
		_ = c.Terminate(context.Background())
		return nil, err
	}
	return p, nil
}

// ExternalPostgres uses an existing server. The URL must name a superuser (tests
// create databases, publications and replication slots).
func ExternalPostgres(ctx context.Context, dsn string) (*Postgres, error) {
	p := &Postgres{url: dsn}
	if err := p.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvDatabaseURL, err)
	}
	return p, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// URL is the superuser connection URL of the server's default database.
func (p *Postgres) URL() string { return p.url }

// Connect opens a pgx connection to the server's default database as superuser.
func (p *Postgres) Connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.Connect(ctx, p.url)
}

// Exec runs SQL on the server's default database as superuser.
func (p *Postgres) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// NewDatabase creates a database of the test's own on the server and returns its
// superuser URL. The database, with its replication slots and connections, is dropped
// when the test ends.
func (p *Postgres) NewDatabase(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "t_" + randomHex(6)
	if err := p.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgcachetest: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.DropDatabase(ctx, name); err != nil {
			tb.Errorf("pgcachetest: %v", err)
		}
	})
	return WithDatabase(p.url, name)
}

// DropDatabase drops a database after ending its connections (replication ones too)
// and dropping its replication slots.
func (p *Postgres) DropDatabase(ctx context.Context, name string) error {
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// A slot being consumed cannot be dropped: end its walsender first, then retry
	// while the slot is released.
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE database = $1 AND active_pid IS NOT NULL`, name)
		if err == nil {
			_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE database = $1`, name)
		}
		if err == nil || attempt == 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("drop replication slots of %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// Stop stops the server's container: connections fail until Start.
func (p *Postgres) Stop(ctx context.Context) error {
	if p.container == nil {
		return errors.New("pgcachetest: cannot stop an external server")
	}
	timeout := 10 * time.Second
	return p.container.Stop(ctx, &timeout)
}

// Start starts a stopped container again, on the same port, and waits until it
// accepts connections.
func (p *Postgres) Start(ctx context.Context) error {
	if p.container == nil {
		return errors.New("pgcachetest: cannot start an external server")
	}
	if err := p.container.Start(ctx); err != nil {
		return err
	}
	return p.waitReady(ctx)
}

// Restart stops and starts the server.
func (p *Postgres) Restart(ctx context.Context) error {
	if err := p.Stop(ctx); err != nil {
		return err
	}
	return p.Start(ctx)
}

// Terminate removes the container. For an external server it does nothing.
func (p *Postgres) Terminate(ctx context.Context) error {
	if p.container == nil {
		return nil
	}
	return p.container.Terminate(ctx)
}

// waitReady polls until a query succeeds: after a restart the log lines the
// container waited for at first start are already there.
func (p *Postgres) waitReady(ctx context.Context) error {
	var last error
	for {
		conn, err := pgx.Connect(ctx, p.url)
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(context.Background())
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("PostgreSQL not ready: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WithDatabase returns dsn (URL or key=value form) naming another database.
func WithDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	return strings.TrimSpace(dsn) + " dbname='" + strings.ReplaceAll(name, "'", `\'`) + "'"
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
