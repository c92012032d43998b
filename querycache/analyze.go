package querycache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// AnalyzerConfig configures an Analyzer. The zero value is valid: every zero field takes its
// default.
type AnalyzerConfig struct {
	// MaxStatements bounds the statement texts whose catalog-free analysis is kept.
	// default: 4096
	MaxStatements int
	// MaxPlans bounds the plans kept, one per statement text and session identity.
	// default: 8192
	MaxPlans int
	// MaxIdentities bounds the session identities whose catalog facts are kept.
	// default: 64
	MaxIdentities int
	// MaxCatalogEntries bounds the names whose catalog facts one identity keeps.
	// default: 10000
	MaxCatalogEntries int
	// CatalogTTL is how long catalog facts and the plans built from them are
	// trusted before they are loaded again. InvalidateCatalog drops them sooner.
	// default: 30s
	CatalogTTL time.Duration
	// MaxStatementLen: longer statement texts are not analyzed, and not cached.
	// default: 65536 (bytes)
	MaxStatementLen int
	// MaxRelations: statements reading more relations (partitions included) are
	// not cached. default: 256
	MaxRelations int
	// MaxTags bounds the row tags of one relation in one entry (IN lists, arrays);
	// past it the entry takes the relation-wide tag. default: 64
	MaxTags int
	// MaxViewDepth bounds the nesting of views resolved to their base relations.
	// default: 8
	MaxViewDepth int
	// Published reports whether a relation's changes reach the invalidator (it is
	// in the publication). Statements reading an unpublished relation are not
	// cached. default: nil, every relation counts as published
	Published func(Relation) bool
}

func (c AnalyzerConfig) withDefaults() (AnalyzerConfig, error) {
	var errs []error
	check := func(name string, v *int, def int) {
		switch {
		case *v < 0:
			errs = append(errs, fmt.Errorf("querycache: AnalyzerConfig.%s is negative (%d)", name, *v))
		case *v == 0:
			*v = def
		}
	}
	check("MaxStatements", &c.MaxStatements, 4096)
	check("MaxPlans", &c.MaxPlans, 8192)
	check("MaxIdentities", &c.MaxIdentities, 64)
	check("MaxCatalogEntries", &c.MaxCatalogEntries, 10000)
	check("MaxStatementLen", &c.MaxStatementLen, 65536)
	check("MaxRelations", &c.MaxRelations, 256)
	check("MaxTags", &c.MaxTags, 64)
	check("MaxViewDepth", &c.MaxViewDepth, 8)
	switch {
	case c.CatalogTTL < 0:
		errs = append(errs, fmt.Errorf("querycache: AnalyzerConfig.CatalogTTL is negative (%s)", c.CatalogTTL))
	case c.CatalogTTL == 0:
		c.CatalogTTL = 30 * time.Second
	}
	return c, errors.Join(errs...)
}

// planClockResolution is how much later than CatalogTTL a plan may be resolved
// again. The clock's goroutine stops once the Analyzer is unreachable.
const planClockResolution = 100 * time.Millisecond

// Identity is what, besides the data, decides what a statement means and returns.
// Keys include all of it, so two databases or two roles never share an entry, and
// plans and catalog facts are kept per identity.
type Identity struct {
	// Server identifies the server: its system identifier, or host:port.
	Server string
	// Database is the database name (current_database()).
	Database string
	// Role is the role privileges and row security are checked for (current_user).
	// Plans take CURRENT_USER and current_user() as constants because Role is in
	// the key: it must be what current_user returns for the statement.
	Role string
	// SearchPath is the session's search_path setting, as SHOW search_path gives it.
	SearchPath string
	// Settings holds the other session settings that change results: at least
	// TimeZone, DateStyle and IntervalStyle (pgconn reports all three through
	// ParameterStatus). The built-in functions, operators and casts that depend
	// only on them (analyze_settings.go: date_trunc and to_char of timestamptz,
	// timestamptz arithmetic and comparisons, text and JSON output of dates,
	// ...) are cached only because they are in the key.
	Settings string
}

// Session is what the driver passes for each statement.
type Session struct {
	Identity Identity
	// Conn runs catalog queries on the session's connection. Nil gives the
	// catalog-free analysis: plans say what they could not check (ReasonNotChecked)
	// and are never cacheable.
	Conn Querier
	// InTransaction: the connection is inside an explicit transaction block
	// (pgconn's TxStatus is not 'I'). Nothing is cached there.
	InTransaction bool
	// TempObjects: the session created temporary objects (Plan.CreatesTemp), whose
	// names may shadow the relations a statement means. Nothing is cached then.
	TempObjects bool
}

// Analyzer turns statement texts into Plans. It keeps the catalog-free analysis per
// text, the plans per text and identity, and catalog facts per identity, all bounded.
// It is safe for concurrent use.
type Analyzer struct {
	cfg AnalyzerConfig
	gen atomic.Uint64 // bumped by InvalidateCatalog: plans of older generations are redone

	stmts *otter.Cache[string, *stmtEntry]
	plans *otter.Cache[planKey, *Plan]
	// clock tells plan expiry to planClockResolution: reading the precise time
	// costs as much as the rest of a repeated Plan on some machines.
	clock *otter.CoarseClock

	catMu    sync.Mutex
	catalogs map[catalogKey]*catalogCache

	// source gives the catalog for a session; tests replace it.
	source func(*Session) catalogSource
}

type planKey struct {
	sql string
	id  Identity
}

// stmtEntry is a statement's catalog-free analysis with the plans that do not depend
// on the session's catalog, built once.
type stmtEntry struct {
	st      *stmt
	refused *Plan // non-nil when the text alone decides
	inTx    *Plan
	temp    *Plan
	offline *Plan
}

// NewAnalyzer returns an Analyzer, or an error naming every invalid Config field.
func NewAnalyzer(cfg AnalyzerConfig) (*Analyzer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	stmts, err := otter.New(&otter.Options[string, *stmtEntry]{MaximumSize: cfg.MaxStatements})
	if err != nil {
		return nil, fmt.Errorf("querycache: statement cache: %w", err)
	}
	plans, err := otter.New(&otter.Options[planKey, *Plan]{MaximumSize: cfg.MaxPlans})
	if err != nil {
		return nil, fmt.Errorf("querycache: plan cache: %w", err)
	}
	return &Analyzer{
		cfg:      cfg,
		stmts:    stmts,
		plans:    plans,
		clock:    otter.NewCoarseClock(planClockResolution),
		catalogs: map[catalogKey]*catalogCache{},
		source:   func(s *Session) catalogSource { return pgCatalog{q: s.Conn} },
	}, nil
}

// Plan returns the plan of sql for the session. A statement planned before for the
// same identity costs a map lookup. The error is non-nil only when catalog queries
// fail (the connection is broken, ctx ended): the driver should then send the
// statement to PostgreSQL uncached.
func (a *Analyzer) Plan(ctx context.Context, sess *Session, sql string) (*Plan, error) {
	if sess != nil && sess.Conn != nil && !sess.InTransaction && !sess.TempObjects {
		key := planKey{sql: sql, id: sess.Identity}
		p, ok := a.plans.GetIfPresent(key)
		if ok && p.gen == a.gen.Load() && a.clock.NowNano() < p.expires {
			return p, nil
		}
	}
	e := a.statement(sql)
	switch {
	case e.refused != nil:
		return e.refused, nil
	case sess == nil || sess.Conn == nil:
		return e.offline, nil
	case sess.InTransaction:
		return e.inTx, nil
	case sess.TempObjects:
		return e.temp, nil
	}
	gen := a.gen.Load()
	start := time.Now()
	r := &resolver{a: a, ctx: ctx, cache: a.catalog(sess.Identity), src: a.source(sess)}
	p, err := r.plan(e.st)
	if err != nil {
		return nil, err
	}
	p.gen = gen
	p.expires = start.Add(a.cfg.CatalogTTL).UnixNano()
	a.plans.Set(planKey{sql: sql, id: sess.Identity}, p)
	return p, nil
}

// Offline returns the catalog-free plan of sql (the same as Plan with a nil Conn).
func (a *Analyzer) Offline(sql string) *Plan {
	return a.statement(sql).offline
}

// InvalidateCatalog drops what the analyzer knows about the named relations (or
// about everything, given none) and makes every plan be resolved again on next use.
// Package invalidate calls it when a relation's schema changes.
func (a *Analyzer) InvalidateCatalog(rels ...Relation) {
	a.catMu.Lock()
	for _, c := range a.catalogs {
		c.invalidate(rels)
	}
	a.catMu.Unlock()
	a.gen.Add(1)
}

// statement returns the catalog-free analysis of sql, cached by text.
func (a *Analyzer) statement(sql string) *stmtEntry {
	e, ok := a.stmts.GetIfPresent(sql)
	if ok {
		return e
	}
	var st *stmt
	if len(sql) > a.cfg.MaxStatementLen {
		st = &stmt{}
		st.refuse(ReasonUnsupported, fmt.Sprintf("statement longer than %d bytes", a.cfg.MaxStatementLen))
	} else {
		st = parseStatement(sql)
	}
	e = &stmtEntry{st: st}
	base := Plan{
		Fingerprint: st.fingerprint,
		Off:         st.directives.Off,
		TTL:         st.directives.TTL,
		CreatesTemp: st.createsTemp,
		textHash:    st.textHash,
		maxTags:     a.cfg.MaxTags,
	}
	if st.directiveErr != nil {
		base.DirectiveError = st.directiveErr.Error()
	}
	if st.reason != ReasonNone {
		p := base
		p.Reason, p.Detail = st.reason, st.detail
		e.refused = &p
	} else {
		inTx, temp := base, base
		inTx.Reason = ReasonInTransaction
		temp.Reason = ReasonTempObjects
		e.inTx, e.temp = &inTx, &temp
	}
	e.offline = offlinePlan(st, base)
	a.stmts.Set(sql, e)
	return e
}

// catalog returns the catalog cache of an identity, making room when there are too
// many identities.
func (a *Analyzer) catalog(id Identity) *catalogCache {
	k := catalogKey{server: id.Server, database: id.Database, role: id.Role, searchPath: id.SearchPath}
	a.catMu.Lock()
	defer a.catMu.Unlock()
	c, ok := a.catalogs[k]
	if !ok {
		if len(a.catalogs) >= a.cfg.MaxIdentities {
			// Evict the least recently used identity.
			var oldest catalogKey
			var oldestUsed time.Time
			first := true
			for key, cc := range a.catalogs {
				if first || cc.used.Before(oldestUsed) {
					oldest, oldestUsed, first = key, cc.used, false
				}
			}
			delete(a.catalogs, oldest)
		}
		c = newCatalogCache()
		a.catalogs[k] = c
	}
	c.used = time.Now()
	return c
}

// Fresh reports whether a plan Plan returned is still current: the catalog has not
// been invalidated and its facts have not expired since. A caller that remembers
// plans (per connection, say) may reuse one while it is fresh and its session's
// identity is unchanged, instead of asking Plan again.
func (a *Analyzer) Fresh(p *Plan) bool {
	return p.gen == a.gen.Load() && a.clock.NowNano() < p.expires
}
