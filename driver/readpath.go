package driver

import (
	"context"
	sqldriver "database/sql/driver"
	"io"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/invalidate"
	"github.com/pgcache/pgcache/querycache"
)

// readPath is the cached read path that a caching connector's connections share.
type readPath struct {
	analyzer *querycache.Analyzer
	cache    *querycache.Cache
	schemes  invalidate.SchemeRegistry
	redis    redis.UniversalClient // nil without Redis
	filter   relationFilter
	flights  flights
	fence    fence
	// requestProgress asks the change stream to report its position now.
	requestProgress func()
}

// Bypass reasons of the driver, counted with the cache's own (querycache.Bypass*)
// and the analyzer's refusals (querycache.Reason strings).
const (
	bypassContext     = "context-off"      // the context says WithoutCache
	bypassTransaction = "in-transaction"   // an explicit transaction is open
	bypassSessionErr  = "session-error"    // reading the session's identity failed
	bypassPlanErr     = "analyzer-error"   // catalog queries of the analyzer failed
	bypassFence       = "read-your-writes" // this *sql.DB wrote and the stream has not caught up
	bypassArguments   = "arguments"        // an argument cannot be part of a key
	bypassFiltered    = "filtered"         // a relation is outside Config.Allow or in Config.Deny
)

// queryFunc runs the statement on PostgreSQL through pgx's stdlib.
type queryFunc func() (sqldriver.Rows, error)

// tagsFunc gives the tags of an entry filled under a stamp.
type tagsFunc func(querycache.Stamp) []querycache.Tag

// query answers a query, run as a prepared statement when stmt is not nil: from
// the cache when it may, from PostgreSQL otherwise.
func (rp *readPath) query(ctx context.Context, c *Conn, stmt *Stmt, sql string, args []sqldriver.NamedValue) (sqldriver.Rows, error) {
	plan, why, readOnly := rp.plan(ctx, c, sql, args)
	if plan == nil {
		rp.cache.CountBypass(why)
		return c.passThrough(c.direct(ctx, stmt, sql, args), !readOnly && rp.offlineMayWrite(sql))
	}
	key, ok := plan.Key(&c.sess.id, args)
	if !ok {
		rp.cache.CountBypass(bypassArguments)
		return c.passThrough(c.direct(ctx, stmt, sql, args), false)
	}
	k := string(key[:])
	if res, hit := rp.cache.Lookup(ctx, k); hit {
		return res.Rows(), nil
	}
	direct := c.direct(ctx, stmt, sql, args)
	// Schemes are registered before the stamp is taken, so every change applied
	// after the stamp computes their tags; a scheme not (yet) usable, or usable
	// only from a later watermark, makes its relation's tags wide.
	var schemes []schemeUse
	for _, s := range plan.Schemes() {
		from, ok := rp.schemes.Activate(ctx, s, rp.cache.Watermark())
		schemes = append(schemes, schemeUse{rel: s.Relation, usable: ok, from: from})
	}
	ttl := plan.TTL
	if d, ok := ttlFrom(ctx); ok {
		ttl = d
	}
	return rp.fill(ctx, c, k, func(stamp querycache.Stamp) []querycache.Tag {
		return entryTags(plan.Tags(args), schemes, stamp.Watermark)
	}, ttl, direct)
}

// schemeUse is what the registry said about one scheme of a plan.
type schemeUse struct {
	rel    querycache.Relation
	usable bool
	from   querycache.LSN
}

// entryTags returns the tags of an entry stamped at watermark: the plan's, with the
// row tags of a relation replaced by its wide tag when one of its schemes cannot be
// relied on for an entry of that stamp.
func entryTags(tags []querycache.Tag, schemes []schemeUse, watermark querycache.LSN) []querycache.Tag {
	for _, s := range schemes {
		if s.usable && s.from <= watermark {
			continue
		}
		kept := tags[:0:0]
		for _, t := range tags {
			if !querycache.IsRowTagOf(t, s.rel) {
				kept = append(kept, t)
			}
		}
		tags = append(kept, querycache.WideTag(s.rel))
	}
	return tags
}

// plan returns the plan of a cacheable query that may use the cache now, or nil
// and the reason to bypass it. readOnly reports a statement known not to write:
// a cacheable plan (every function it calls is immutable) bypassed all the same.
func (rp *readPath) plan(ctx context.Context, c *Conn, sql string, args []sqldriver.NamedValue) (plan *querycache.Plan, why string, readOnly bool) {
	if cacheOff(ctx) {
		return nil, bypassContext, false
	}
	pgxConn := c.base.Conn()
	if pgxConn.PgConn().TxStatus() != 'I' {
		return nil, bypassTransaction, false
	}
	if ok, why := rp.cache.Usable(); !ok {
		return nil, why, false
	}
	if writes, stale := rp.fence.pending(); stale || !c.sess.current {
		lsn, err := c.sess.load(ctx, pgxConn)
		if err != nil {
			return nil, bypassSessionErr, false
		}
		rp.fence.cover(writes, lsn)
	} else {
		c.sess.refreshSettings(pgxConn)
	}
	plan = c.sess.plan(rp.analyzer, sql)
	if plan == nil {
		c.qsess = querycache.Session{Identity: c.sess.id, Conn: pgxConn, TempObjects: c.sess.temp}
		var err error
		if plan, err = rp.analyzer.Plan(ctx, &c.qsess, sql); err != nil {
			return nil, bypassPlanErr, false
		}
		if plan.CreatesTemp {
			c.sess.temp = true
			c.sess.plans = nil
		}
		if plan.Cacheable {
			c.sess.remember(sql, plan)
		}
	}
	switch {
	case !plan.Cacheable:
		return nil, plan.Reason.String(), false
	case plan.Off:
		return nil, querycache.ReasonDirectiveOff.String(), true
	case !rp.filter.allows(plan.Reads):
		return nil, bypassFiltered, true
	case rp.fence.holds(rp.cache.Watermark()):
		// The stream may be idle past the write: ask it where it is.
		rp.requestProgress()
		return nil, bypassFence, true
	}
	return plan, "", true
}

// offlineMayWrite tells, without the catalog, whether a statement may write.
func (rp *readPath) offlineMayWrite(sql string) bool { return rp.analyzer.MayWrite(sql) }

// direct returns the function that runs the query on PostgreSQL through pgx's
// stdlib, as a prepared statement when stmt is not nil. It is made only when
// needed: a cache hit allocates no closure.
func (c *Conn) direct(ctx context.Context, stmt *Stmt, sql string, args []sqldriver.NamedValue) queryFunc {
	if stmt != nil {
		return func() (sqldriver.Rows, error) { return stmt.base.QueryContext(ctx, args) }
	}
	return func() (sqldriver.Rows, error) { return c.base.QueryContext(ctx, sql, args) }
}

// passThrough runs a statement on PostgreSQL, then records what it may have
// changed when mayWrite: data (read-your-writes) and the session (a statement that
// may write may also SET role or search_path).
func (c *Conn) passThrough(direct queryFunc, mayWrite bool) (sqldriver.Rows, error) {
	rows, err := direct()
	c.afterStatement(mayWrite)
	return rows, err
}

// afterStatement records a statement that is not a cached read.
func (c *Conn) afterStatement(mayWrite bool) {
	rp := c.connector.rp
	if rp == nil {
		return
	}
	inTx := c.base.Conn().PgConn().TxStatus() != 'I'
	if mayWrite {
		// Whatever may write may also SET (role, search_path, ...): ask again.
		c.sess.current = false
		if inTx {
			c.txMayWrite = true
		} else {
			rp.fence.wrote()
		}
	}
	if c.txMayWrite && !inTx {
		// The transaction ended (COMMIT, ROLLBACK, or an error): count its
		// writes as committed, which is the safe assumption.
		c.txMayWrite = false
		rp.fence.wrote()
	}
}

// fill runs a missed query once for all concurrent callers of the same key: the
// first caller (the leader) runs it on its own connection, in its own goroutine,
// and the others wait for its result with their own contexts. A leader whose
// context ended does not fail the followers: one of them leads a new fill. A result
// that cannot be shared (too large, or the leader's query failed) makes the
// followers query on their own connections.
func (rp *readPath) fill(ctx context.Context, c *Conn, key string, tags tagsFunc, ttl time.Duration, direct queryFunc) (sqldriver.Rows, error) {
	for attempt := 0; attempt < 3; attempt++ {
		f, leader := rp.flights.join(key)
		if leader {
			res, handoff, err := rp.runFill(ctx, key, tags, ttl, direct)
			rp.flights.finish(key, f, res, err != nil && ctx.Err() != nil)
			switch {
			case err != nil:
				c.afterStatement(false)
				return nil, err
			case handoff != nil:
				return handoff, nil
			}
			return res.Rows(), nil
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if f.res != nil {
			return f.res.Rows(), nil
		}
		if !f.retry {
			break
		}
	}
	return c.passThrough(direct, false)
}

// runFill runs the query on the leader's connection and stores its result when it
// is complete and within the limits. The stamp is taken before the query is sent.
// A result that cannot be cached comes back as handoff: the open rows, for the
// leader's caller alone.
func (rp *readPath) runFill(ctx context.Context, key string, tags tagsFunc, ttl time.Duration, direct queryFunc) (res *querycache.Result, handoff sqldriver.Rows, err error) {
	stamp := rp.cache.Stamp()
	rows, err := direct()
	if err != nil {
		return nil, nil, err
	}
	cols, err := querycache.ColumnsOf(rows)
	if err != nil {
		return nil, rows, nil
	}
	b := rp.cache.NewResultBuilder(cols)
	dest := make([]sqldriver.Value, len(cols))
	for {
		err := rows.Next(dest)
		if err == io.EOF {
			break
		}
		if err != nil {
			_ = rows.Close()
			return nil, nil, err
		}
		if b.Add(dest) != nil {
			rp.cache.CountOverLimit()
			return nil, newHandoffRows(b, dest, rows), nil
		}
	}
	if err := rows.Close(); err != nil {
		return nil, nil, err
	}
	res, err = b.Result()
	if err != nil {
		return nil, nil, err
	}
	// A fill the cache refuses (stale, dropped while unusable, Redis down) still
	// answers this query: the error only means a later miss.
	_ = rp.cache.Store(ctx, key, res, tags(stamp), stamp, ttl)
	return res, nil, nil
}

// flights runs at most one fill per key at a time (see readPath.fill).
//
// It is not x/sync's singleflight, which runs the function in a goroutine of its
// own: the fill must run on the leader's connection, which belongs to the
// leader's caller, and a goroutine per miss cost a third of the miss overhead
// (its stack grows through pgx's call depth on every miss).
type flights struct {
	mu sync.Mutex
	m  map[string]*flight // one per fill in progress: bounded by the connections
}

// flight is one fill in progress. res and retry are set before done is closed.
type flight struct {
	done  chan struct{}
	res   *querycache.Result // nil: nothing to share
	retry bool               // the leader's context ended: another caller should lead
}

// join returns the fill in progress for key, or starts one led by the caller.
func (g *flights) join(key string) (f *flight, leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.m[key]; f != nil {
		return f, false
	}
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f = &flight{done: make(chan struct{})}
	g.m[key] = f
	return f, true
}

// finish ends the leader's fill and wakes the followers.
func (g *flights) finish(key string, f *flight, res *querycache.Result, retry bool) {
	g.mu.Lock()
	delete(g.m, key)
	g.mu.Unlock()
	f.res, f.retry = res, retry
	close(f.done)
}
