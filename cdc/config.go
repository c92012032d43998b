package cdc

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults applied by NewListener to the zero fields of a Config.
const (
	DefaultPublication         = "pgcache"
	DefaultSlot                = "pgcache"
	DefaultStatusInterval      = 10 * time.Second
	DefaultBackoffMin          = 250 * time.Millisecond
	DefaultBackoffMax          = 30 * time.Second
	DefaultMaxTransactionBytes = 64 << 20
)

// SlotFor returns the default persistent slot name of a database: replication
// slots are per server, so caches of two databases of one server need two.
// "pgcache_" and the database name, when that is a valid slot name (lower case
// letters, digits and underscores, at most 63 bytes); otherwise the name's valid
// part and a hash of the whole name.
func SlotFor(database string) string {
	name := DefaultSlot + "_" + database
	valid := len(name) <= 63
	for _, r := range database {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			valid = false
			break
		}
	}
	if valid {
		return name
	}
	var b strings.Builder
	b.WriteString(DefaultSlot + "_")
	for _, r := range strings.ToLower(database) {
		if b.Len() >= 45 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	sum := sha256.Sum256([]byte(database))
	b.WriteByte('_')
	b.WriteString(hex.EncodeToString(sum[:4]))
	return b.String()
}

// Config configures a Listener. The zero value of every field but ConnString
// means its default.
type Config struct {
	// ConnString is a PostgreSQL connection string (URL or key=value) for a role
	// with the REPLICATION attribute (or a superuser). The listener adds
	// replication=database itself. Required.
	ConnString string

	// Publication names the publication whose tables are streamed: lowercase
	// letters, digits and underscores, at most 63 bytes.
	// default: "pgcache"
	Publication string

	// Tables lists the tables ("name" or "schema.name") the publication must
	// cover. Empty means all tables: a publication created by the listener is
	// then FOR ALL TABLES (which needs a superuser), and an existing one is used
	// as it is. A listed table missing from an existing publication is added when
	// CreatePublication is set, and an error otherwise.
	// default: empty (all tables)
	Tables []string

	// CreatePublication lets the listener create the publication when it does
	// not exist (and add missing Tables to it). Without it a missing publication
	// is a permanent error that says how to create it.
	// default: false
	CreatePublication bool

	// Slot names the logical replication slot: lowercase letters, digits and
	// underscores, at most 63 bytes.
	// default: "pgcache"
	Slot string

	// Temporary uses a temporary slot, which PostgreSQL drops when the
	// connection ends: nothing is left behind, but every (re)connection starts a
	// new history, so the consumer's HistoryLost is called each time. A
	// persistent slot (the default) resumes where the last acknowledged
	// transaction ended, across reconnects and process restarts, and holds WAL
	// on the server while no listener reads it.
	// default: false (persistent)
	Temporary bool

	// StatusInterval is the longest time between two status updates sent to
	// the server. It must stay well below the server's wal_sender_timeout
	// (60 s by default), or the server ends the connection.
	// default: 10s
	StatusInterval time.Duration

	// Backoff bounds the delay before reconnecting after an error.
	Backoff Backoff

	// MaxTransactionBytes bounds the memory held for transactions that are
	// being received (until their commit) or waiting for the consumer, all
	// together, counted approximately from the size of their decoded changes.
	// When the row changes of open transactions alone would pass it, the
	// largest of them stops keeping individual row changes and keeps, per
	// relation, an Overflow event ("any row may have changed") instead.
	// default: 64 MiB
	MaxTransactionBytes int64

	// Logger receives the listener's logs (connections, errors, history loss).
	// default: slog.Default()
	Logger *slog.Logger
}

// Backoff is a capped exponential backoff: the n-th consecutive failure waits
// Min·2ⁿ⁻¹, at most Max, with random jitter taking off up to half of it.
type Backoff struct {
	Min time.Duration // default: 250ms
	Max time.Duration // default: 30s
}

// delay is the wait before reconnection attempt n (0 for the first retry).
// jitter is a random number in [0, 1).
func (b Backoff) delay(n int, jitter float64) time.Duration {
	d := b.Min
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d - time.Duration(jitter*float64(d)/2)
}

// nameRE is the shape allowed for slot and publication names: PostgreSQL's own
// rule for slot names, which is also safe to quote anywhere.
var nameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// validate fills the defaults and checks every field, in one place. It also
// returns the parsed connection config, so a bad ConnString fails here.
func (c *Config) validate() (*pgconn.Config, error) {
	if c.ConnString == "" {
		return nil, errors.New("cdc: Config.ConnString is empty")
	}
	pgcfg, err := pgconn.ParseConfig(c.ConnString)
	if err != nil {
		// pgconn's parse errors redact the password.
		return nil, fmt.Errorf("cdc: Config.ConnString: %w", err)
	}
	if c.Publication == "" {
		c.Publication = DefaultPublication
	}
	if c.Slot == "" {
		c.Slot = DefaultSlot
	}
	if !nameRE.MatchString(c.Publication) {
		return nil, fmt.Errorf("cdc: Config.Publication %q: use 1 to 63 lowercase letters, digits or underscores", c.Publication)
	}
	if !nameRE.MatchString(c.Slot) {
		return nil, fmt.Errorf("cdc: Config.Slot %q: use 1 to 63 lowercase letters, digits or underscores", c.Slot)
	}
	c.Tables = append([]string(nil), c.Tables...)
	for _, t := range c.Tables {
		if _, err := tableIdentifier(t); err != nil {
			return nil, fmt.Errorf("cdc: Config.Tables: %w", err)
		}
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.StatusInterval < 0 {
		return nil, fmt.Errorf("cdc: Config.StatusInterval %v is negative", c.StatusInterval)
	}
	if c.Backoff.Min == 0 {
		c.Backoff.Min = DefaultBackoffMin
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = max(DefaultBackoffMax, c.Backoff.Min)
	}
	if c.Backoff.Min < 0 || c.Backoff.Max < c.Backoff.Min {
		return nil, fmt.Errorf("cdc: Config.Backoff {Min %v, Max %v}: want 0 < Min <= Max", c.Backoff.Min, c.Backoff.Max)
	}
	if c.MaxTransactionBytes == 0 {
		c.MaxTransactionBytes = DefaultMaxTransactionBytes
	}
	if c.MaxTransactionBytes < 0 {
		return nil, fmt.Errorf("cdc: Config.MaxTransactionBytes %d is negative", c.MaxTransactionBytes)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	pgcfg.RuntimeParams["replication"] = "database"
	// pgoutput sends values in the text output of the walsender's session:
	// fix the settings that shape it, whatever the server's defaults, so
	// consumers parse one format (ISO dates, hex bytea, UTC offsets, exact floats).
	pgcfg.RuntimeParams["DateStyle"] = "ISO, MDY"
	pgcfg.RuntimeParams["IntervalStyle"] = "postgres"
	pgcfg.RuntimeParams["TimeZone"] = "UTC"
	pgcfg.RuntimeParams["bytea_output"] = "hex"
	pgcfg.RuntimeParams["extra_float_digits"] = "3"
	pgcfg.RuntimeParams["application_name"] = cmp.Or(pgcfg.RuntimeParams["application_name"], "pgcache-cdc")
	return pgcfg, nil
}

// tableIdentifier turns "name" or "schema.name" into a quoted identifier.
func tableIdentifier(t string) (string, error) {
	parts := strings.Split(t, ".")
	if len(parts) > 2 {
		return "", fmt.Errorf("table %q: want name or schema.name", t)
	}
	for _, p := range parts {
		if p == "" || strings.ContainsRune(p, 0) {
			return "", fmt.Errorf("table %q: want name or schema.name", t)
		}
	}
	return pgx.Identifier(parts).Sanitize(), nil
}

// quoteIdent quotes a validated name as an SQL identifier.
func quoteIdent(name string) string { return pgx.Identifier{name}.Sanitize() }

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings
// is always on since PostgreSQL 9.1 and cannot be turned off from 16 on; the E”
// form avoids depending on it).
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `'`, `''`)
	return `E'` + s + `'`
}
