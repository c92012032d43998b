package driver

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
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

// option is one pgcache_* DSN parameter.
type option struct {
	doc string
	set func(c *Config, value string) error
}

// options lists every pgcache_* DSN parameter; any other is an error that names it.
var options = map[string]option{
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
	return &cp, nil
}
