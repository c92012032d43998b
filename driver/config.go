package driver

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
)

// Mode says whether a connector caches.
type Mode string

const (
	// ModeAuto caches what can be cached while an invalidation source proves the
	// cache current, and reads from PostgreSQL otherwise.
	ModeAuto Mode = "auto"
	// ModeOff never caches: pgcache is a pass-through to pgx.
	ModeOff Mode = "off"
)

// Config configures a pgcache connector. Build one with ParseConfig, or fill
// ConnConfig yourself (from pgx.ParseConfig) and leave the rest zero for defaults.
// A Config must not be changed after it was passed to NewConnector.
type Config struct {
	// ConnConfig says how to reach PostgreSQL, exactly as for pgx. Required.
	ConnConfig *pgx.ConnConfig

	// Mode says whether to cache.
	// DSN: pgcache_mode=auto|off. default: ModeAuto
	Mode Mode

	// TTL is how long an entry may live when its statement names no TTL of its
	// own. It is a backstop for lost invalidations: entries normally leave the
	// cache when a committed change invalidates them.
	// DSN: pgcache_ttl=5m. default: 5m
	TTL time.Duration

	// MaxLag is the staleness bound: while the change stream is disconnected or
	// further behind than this, reads bypass the cache.
	// DSN: pgcache_max_lag=1s. default: 1s
	MaxLag time.Duration

	// L1Bytes bounds the memory of the in-process cache.
	// DSN: pgcache_l1_bytes=64MiB. default: 64 MiB
	L1Bytes int64

	// MaxRows and MaxBytes bound one entry: a larger result is streamed to the
	// application and not cached.
	// DSN: pgcache_max_rows=10000, pgcache_max_bytes=1MiB. default: 10000 rows, 1 MiB
	MaxRows  int
	MaxBytes int

	// Allow, when not empty, lists the only relations whose queries are cached;
	// Deny lists relations whose queries never are. Patterns: "schema.name",
	// "name" (any schema) or "schema.*".
	// DSN: pgcache_allow=public.users,public.orders, pgcache_deny=audit.*
	Allow, Deny []string

	// RedisURL, when set, adds Redis as a cache shared by every instance that
	// uses it (L2 behind the in-process L1): redis://[user:password@]host:port/db
	// or rediss:// for TLS. The connector creates and closes the client.
	// DSN: pgcache_redis=redis://cache:6379/0. default: "" (in-process only)
	RedisURL string

	// RedisNamespace starts every key pgcache writes to Redis. Instances share a
	// cache exactly when they use the same Redis and namespace, so databases must
	// not share one.
	// DSN: pgcache_redis_namespace=app. default: "pgcache:" + the database name
	RedisNamespace string

	// Redis is the programmatic form of RedisURL: a client the caller owns (and
	// closes after the connector), for Sentinel, Cluster or custom options. It must
	// be created with ContextTimeoutEnabled: true. It takes precedence over RedisURL.
	Redis redis.UniversalClient

	// Publication names the publication whose changes keep the cache current. It
	// is created (FOR ALL TABLES) when missing and the role may.
	// DSN: pgcache_publication=pgcache. default: "pgcache"
	Publication string

	// Slot names the persistent replication slot that the elected instance of a
	// cache shared through Redis consumes. Without Redis every connector uses a
	// temporary slot of its own.
	// DSN: pgcache_slot=name. default: "pgcache_" and the database name
	// (cdc.SlotFor)
	Slot string

	// Follower makes this instance of a shared cache never consume the change
	// stream itself: another instance, or `pgcache invalidate`, does.
	// DSN: pgcache_follower=true. default: false
	Follower bool

	// Logger receives pgcache's own log records (never query text with arguments).
	// default: slog.Default()
	Logger *slog.Logger

	// StdlibOptions are handed to pgx's database/sql connector: BeforeConnect,
	// AfterConnect, ResetSession and ShouldPing hooks work as they do with pgx.
	StdlibOptions []stdlib.OptionOpenDB

	// dsn is the DSN without pgcache's parameters when the Config came from a
	// DSN: pgx re-parses it for every new connection, as it does for
	// sql.Open("pgx", dsn), so password files and environment changes apply.
	// ConnConfig is nil when pgx can only resolve the DSN when connecting.
	dsn string
}

// Defaults of Config fields that differ from the cache's own.
const (
	DefaultTTL    = 5 * time.Minute
	DefaultMaxLag = time.Second
)

// option is one pgcache_* DSN parameter.
type option struct {
	doc string
	set func(c *Config, value string) error
}

// options lists every pgcache_* DSN parameter; any other is an error that names it.
var options = map[string]option{
	"pgcache_ttl":       durationOption("a positive duration such as 30s or 5m", func(c *Config, d time.Duration) { c.TTL = d }),
	"pgcache_max_lag":   durationOption("a positive duration such as 500ms or 2s", func(c *Config, d time.Duration) { c.MaxLag = d }),
	"pgcache_l1_bytes":  sizeOption(func(c *Config, n int64) { c.L1Bytes = n }),
	"pgcache_max_bytes": sizeOption(func(c *Config, n int64) { c.MaxBytes = int(n) }),
	"pgcache_max_rows": {
		doc: "the most rows one cached entry may have",
		set: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return fmt.Errorf("want a positive number of rows, got %q", v)
			}
			c.MaxRows = n
			return nil
		},
	},
	"pgcache_redis": {
		doc: "the URL of a Redis shared by every instance: redis://host:6379/0",
		set: func(c *Config, v string) error {
			if _, err := redis.ParseURL(v); err != nil {
				return fmt.Errorf("want a redis:// or rediss:// URL: %v", redactURLError(err))
			}
			c.RedisURL = v
			return nil
		},
	},
	"pgcache_redis_namespace": {
		doc: "the prefix of pgcache's Redis keys (no braces)",
		set: func(c *Config, v string) error {
			if v == "" || strings.ContainsAny(v, "{}") {
				return fmt.Errorf("want a non-empty prefix without braces, got %q", v)
			}
			c.RedisNamespace = v
			return nil
		},
	},
	"pgcache_publication": nameOption(func(c *Config, v string) { c.Publication = v }),
	"pgcache_slot":        nameOption(func(c *Config, v string) { c.Slot = v }),
	"pgcache_follower": {
		doc: "true: never consume the change stream (another instance or pgcache invalidate does)",
		set: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			c.Follower = b
			return nil
		},
	},
	"pgcache_allow": listOption(func(c *Config, l []string) { c.Allow = l }),
	"pgcache_deny":  listOption(func(c *Config, l []string) { c.Deny = l }),
	"pgcache_mode": {
		doc: "auto (default) caches while an invalidation source keeps the cache current; off never caches",
		set: func(c *Config, v string) error {
			switch Mode(v) {
			case ModeAuto, ModeOff:
				c.Mode = Mode(v)
				return nil
			}
			return fmt.Errorf("want auto or off, got %q", v)
		},
	},
}

func durationOption(want string, set func(*Config, time.Duration)) option {
	return option{doc: want, set: func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("want %s, got %q", want, v)
		}
		set(c, d)
		return nil
	}}
}

func sizeOption(set func(*Config, int64)) option {
	return option{doc: "a size in bytes, optionally with KiB, MiB or GiB", set: func(c *Config, v string) error {
		n, err := parseSize(v)
		if err != nil {
			return err
		}
		set(c, n)
		return nil
	}}
}

// nameRE is the shape of slot and publication names pgcache accepts: PostgreSQL's
// rule for slot names, safe to quote anywhere.
var nameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

func nameOption(set func(*Config, string)) option {
	return option{doc: "lowercase letters, digits and _, at most 63", set: func(c *Config, v string) error {
		if !nameRE.MatchString(v) {
			return fmt.Errorf("want lowercase letters, digits and underscores (at most 63), got %q", v)
		}
		set(c, v)
		return nil
	}}
}

func listOption(set func(*Config, []string)) option {
	return option{doc: "a comma-separated list of relation patterns", set: func(c *Config, v string) error {
		var list []string
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		set(c, list)
		return nil
	}}
}

// redactURLError keeps a URL's password out of an error message.
func redactURLError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "://"); i >= 0 {
		if at := strings.Index(msg[i:], "@"); at >= 0 {
			msg = msg[:i+3] + "REDACTED" + msg[i+at:]
		}
	}
	return msg
}

// parseSize parses "1048576", "512KiB", "64MiB" or "1GiB".
func parseSize(v string) (int64, error) {
	s, mult := strings.TrimSpace(v), int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, suffix)), m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("want a positive size such as 1048576, 512KiB or 64MiB, got %q", v)
	}
	return n * mult, nil
}

// ParseConfig parses a DSN as pgx does (URL or keyword/value form, PG* environment
// variables, password and service files) after removing pgcache's own pgcache_*
// parameters, which configure the rest of the Config.
func ParseConfig(dsn string) (*Config, error) {
	rest, opts, err := splitDSN(dsn)
	if err != nil {
		return nil, err
	}
	connConfig, err := pgx.ParseConfig(rest)
	if err != nil {
		return nil, err
	}
	c := &Config{ConnConfig: connConfig, dsn: rest}
	names := make([]string, 0, len(opts))
	for name := range opts {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		opt, ok := options[name]
		if !ok {
			return nil, fmt.Errorf("pgcache: unknown DSN parameter %q (known: %s)", name, knownOptions())
		}
		if err := opt.set(c, opts[name]); err != nil {
			return nil, fmt.Errorf("pgcache: DSN parameter %s: %w", name, err)
		}
	}
	return c, nil
}

func knownOptions() string {
	names := make([]string, 0, len(options))
	for name := range options {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// withDefaults returns a copy of c with defaults filled in, or an error that says
// what to fix.
func (c *Config) withDefaults() (*Config, error) {
	// A DSN pgx resolves only when connecting (Driver.OpenConnector) has no
	// ConnConfig yet; every other Config needs one.
	if c == nil || c.ConnConfig == nil && c.dsn == "" {
		return nil, errors.New("pgcache: Config.ConnConfig is required (use ParseConfig or pgx.ParseConfig)")
	}
	cp := *c
	cp.StdlibOptions = append([]stdlib.OptionOpenDB(nil), c.StdlibOptions...)
	switch cp.Mode {
	case "":
		cp.Mode = ModeAuto
	case ModeAuto, ModeOff:
	default:
		return nil, fmt.Errorf("pgcache: Config.Mode %q: want %q or %q", cp.Mode, ModeAuto, ModeOff)
	}
	if cp.Logger == nil {
		cp.Logger = slog.Default()
	}
	if cp.TTL < 0 || cp.MaxLag < 0 || cp.L1Bytes < 0 || cp.MaxRows < 0 || cp.MaxBytes < 0 {
		return nil, fmt.Errorf("pgcache: Config.TTL, MaxLag, L1Bytes, MaxRows and MaxBytes must not be negative")
	}
	if cp.TTL == 0 {
		cp.TTL = DefaultTTL
	}
	if cp.MaxLag == 0 {
		cp.MaxLag = DefaultMaxLag
	}
	if strings.ContainsAny(cp.RedisNamespace, "{}") {
		return nil, fmt.Errorf("pgcache: Config.RedisNamespace %q: braces are not allowed", cp.RedisNamespace)
	}
	for _, n := range []struct{ field, v string }{{"Publication", cp.Publication}, {"Slot", cp.Slot}} {
		if n.v != "" && !nameRE.MatchString(n.v) {
			return nil, fmt.Errorf("pgcache: Config.%s %q: use lowercase letters, digits and underscores (at most 63)", n.field, n.v)
		}
	}
	if _, err := compileFilter(cp.Allow, cp.Deny); err != nil {
		return nil, err
	}
	return &cp, nil
}
