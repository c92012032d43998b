package driver

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/invalidate"
	"github.com/pgcache/pgcache/querycache"
)

// Connector is pgcache's database/sql connector: it makes pgx connections and wraps
// them so pgcache sees every statement. One Connector serves one *sql.DB; Close
// (called by (*sql.DB).Close) releases what it holds.
type Connector struct {
	driver *Driver
	cfg    *Config
	base   sqldriver.Connector // pgx's connector

	// Set in ModeAuto only.
	rp       *readPath
	stream   *changeStream
	ownRedis redis.UniversalClient // created from Config.RedisURL: closed with the connector
}

var (
	_ sqldriver.Connector = (*Connector)(nil)
	_ io.Closer           = (*Connector)(nil)
)

// NewConnector returns a connector for cfg, which it copies: later changes to cfg
// have no effect. Use it with sql.OpenDB, or call OpenDB.
func NewConnector(cfg *Config) (*Connector, error) {
	if cfg == nil {
		return nil, errors.New("pgcache: NewConnector: nil Config")
	}
	own := *cfg
	own.dsn = "" // the ConnConfig, possibly changed by the caller, is what counts
	full, err := own.withDefaults()
	if err != nil {
		return nil, err
	}
	return build(&Driver{}, full)
}

// OpenDB opens a *sql.DB over a new connector for cfg.
func OpenDB(cfg *Config) (*sql.DB, error) {
	c, err := NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(c), nil
}

// newConnector serves sql.Open: cfg came from ParseConfig.
func newConnector(d *Driver, cfg *Config) (*Connector, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return build(d, cfg)
}

func build(d *Driver, cfg *Config) (*Connector, error) {
	c := &Connector{driver: d, cfg: cfg}
	if cfg.dsn != "" {
		// From a DSN: let pgx's own connector parse it for each connection, exactly
		// as sql.Open("pgx", dsn) does.
		base, err := stdlib.GetDefaultDriver().(sqldriver.DriverContext).OpenConnector(cfg.dsn)
		if err != nil {
			return nil, fmt.Errorf("pgcache: %w", err)
		}
		c.base = base
	} else {
		c.base = stdlib.GetConnector(*cfg.ConnConfig, cfg.StdlibOptions...)
	}
	if cfg.Mode == ModeAuto {
		if err := c.buildReadPath(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// buildReadPath sets up the cache, the analyzer and the change stream that keeps
// the cache current.
func (c *Connector) buildReadPath() error {
	filter, err := compileFilter(c.cfg.Allow, c.cfg.Deny)
	if err != nil {
		return err
	}
	rp := &readPath{filter: filter}
	c.stream = newChangeStream(c.cfg, rp)
	rp.requestProgress = c.stream.requestProgress
	rp.analyzer, err = querycache.NewAnalyzer(querycache.AnalyzerConfig{Published: c.stream.isPublished})
	if err != nil {
		return err
	}
	client := c.cfg.Redis
	if client == nil && c.cfg.RedisURL != "" {
		opts, err := redis.ParseURL(c.cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("pgcache: Config.RedisURL: %v", redactURLError(err))
		}
		opts.ContextTimeoutEnabled = true // pgcache's own timeouts bound every call
		if opts.Protocol == 0 {
			// RESP2: pgcache uses no RESP3 feature, and a RESP3 client peeks for
			// push notifications on every command.
			opts.Protocol = 2
		}
		client = redis.NewClient(opts)
		c.ownRedis = client
	}
	rp.redis = client
	ns := c.cfg.RedisNamespace
	if ns == "" {
		var db string
		if c.cfg.ConnConfig != nil {
			db = c.cfg.ConnConfig.Database
		}
		ns = DefaultRedisNamespace(db)
	}
	c.stream.redisNamespace = ns
	if client == nil {
		c.stream.localSchemes = invalidate.NewSchemes(0, 0)
		rp.schemes = c.stream.localSchemes
	} else {
		c.stream.sharedSchemes, err = invalidate.NewSharedSchemes(invalidate.SharedSchemesConfig{Client: client, Key: ns + ":schemes", Logger: c.cfg.Logger})
		if err != nil {
			return err
		}
		rp.schemes = c.stream.sharedSchemes
	}
	rp.cache, err = querycache.New(querycache.Config{
		Redis:       client,
		RedisConfig: querycache.RedisConfig{Prefix: ns, Logger: c.cfg.Logger},
		L1:          querycache.L1Config{MaxBytes: c.cfg.L1Bytes},
		Health:      c.stream,
		MaxLag:      c.cfg.MaxLag,
		DefaultTTL:  c.cfg.TTL,
		Limits:      querycache.Limits{MaxRows: c.cfg.MaxRows, MaxBytes: c.cfg.MaxBytes},
		// The change stream's watermark covers only commits that new snapshots
		// see (invalidate.Visibility): stamps need not lag it.
		VisibilityGrace: -1,
	})
	if err != nil {
		if c.ownRedis != nil {
			_ = c.ownRedis.Close()
		}
		return err
	}
	c.rp = rp
	return nil
}

// Connect opens a new connection, with pgx's errors unchanged.
func (c *Connector) Connect(ctx context.Context) (sqldriver.Conn, error) {
	bc, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := bc.(*stdlib.Conn)
	if !ok {
		_ = bc.Close()
		return nil, fmt.Errorf("pgcache: pgx returned an unexpected connection type %T", bc)
	}
	if c.stream != nil {
		c.stream.start(sc.Conn().Config())
	}
	return &Conn{base: sc, connector: c}, nil
}

// Driver returns the pgcache driver.
func (c *Connector) Driver() sqldriver.Driver { return c.driver }

// Close stops the change stream and drops the cache. Connections already handed
// to database/sql are closed by database/sql.
func (c *Connector) Close() error {
	if c.rp == nil {
		return nil
	}
	c.stream.stop()
	err := c.rp.cache.Close()
	if c.ownRedis != nil {
		err = errors.Join(err, c.ownRedis.Close())
	}
	return err
}

// DefaultRedisNamespace is the Redis namespace of a database's cache when
// Config.RedisNamespace is empty: "pgcache:" + the database name.
func DefaultRedisNamespace(database string) string {
	if database == "" {
		return "pgcache"
	}
	return "pgcache:" + strings.NewReplacer("{", "_", "}", "_").Replace(database)
}
