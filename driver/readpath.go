package driver

import (
	"context"
	sqldriver "database/sql/driver"
	"errors"
	"io"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/singleflight"

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
	flights  singleflight.Group
	fence    fence
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

// query answers a query: from the cache when it may, from PostgreSQL otherwise.
func (rp *readPath) query(ctx context.Context, c *Conn, sql string, args []sqldriver.NamedValue, direct queryFunc) (sqldriver.Rows, error) {
	plan, why, readOnly := rp.plan(ctx, c, sql, args)
	if plan == nil {
		rp.cache.CountBypass(why)
		return c.passThrough(direct, !readOnly && rp.offlineMayWrite(sql))
	}
	key, ok := plan.Key(&c.sess.id, args)
	if !ok {
		rp.cache.CountBypass(bypassArguments)
		return c.passThrough(direct, false)
	}
	k := string(key[:])
	if res, hit := rp.cache.Lookup(ctx, k); hit {
		return res.Rows(), nil
	}
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
	plan, err := rp.analyzer.Plan(ctx, &querycache.Session{Identity: c.sess.id, Conn: pgxConn, TempObjects: c.sess.temp}, sql)
	if err != nil {
		return nil, bypassPlanErr, false
	}
	if plan.CreatesTemp {
		c.sess.temp = true
	}
	switch {
	case !plan.Cacheable:
		return nil, plan.Reason.String(), false
	case plan.Off:
		return nil, querycache.ReasonDirectiveOff.String(), true
	case !rp.filter.allows(plan.Reads):
		return nil, bypassFiltered, true
	case rp.fence.holds(rp.cache.Watermark()):
		return nil, bypassFence, true
	}
	return plan, "", true
}

// offlineMayWrite tells, without the catalog, whether a statement may write.
func (rp *readPath) offlineMayWrite(sql string) bool { return rp.analyzer.MayWrite(sql) }

// passThrough runs a statement on PostgreSQL, then records what it may have
// changed: the session (a statement that is not a cacheable SELECT may SET
// anything) and, when mayWrite, data (read-your-writes).
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
	c.sess.current = false
	inTx := c.base.Conn().PgConn().TxStatus() != 'I'
	if mayWrite {
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

// errNotShared tells followers of a fill that the leader's result is not theirs
// to use (too large to cache, its caller went away, or it failed): they query on
// their own connection.
var errNotShared = errors.New("pgcache: fill not shared")

// fillResult is what a fill gives its waiters.
type fillResult struct {
	res *querycache.Result
	// handoff, for the leader only, continues a result too large to cache.
	handoff sqldriver.Rows
	leader  *Conn
}

// Claims on a caller's connection by the fill it started (see fill).
const (
	claimOpen      = iota
	claimFill      // the fill runs on the connection: the caller waits for it
	claimWithdrawn // the caller left first: the fill must not touch the connection
)

// fill runs a missed query once for all concurrent callers of the same key (x/sync
// singleflight). The first caller's connection runs it, in a goroutine of the
// group, while every caller waits with its own context. The leader's connection
// belongs to database/sql's caller, so it may only be used while that caller waits:
// a claim settles the race between the fill starting and the caller leaving.
// A leader that left (or failed) does not fail the followers: they try again.
func (rp *readPath) fill(ctx context.Context, c *Conn, key string, tags tagsFunc, ttl time.Duration, direct queryFunc) (sqldriver.Rows, error) {
	for attempt := 0; attempt < 3; attempt++ {
		var claim claimState
		ch := rp.flights.DoChan(key, func() (any, error) {
			if !claim.take(claimFill) {
				return nil, errNotShared
			}
			return rp.runFill(ctx, c, key, tags, ttl, direct)
		})
		var r singleflight.Result
		select {
		case r = <-ch:
		case <-ctx.Done():
			if claim.take(claimWithdrawn) {
				return nil, ctx.Err() // a follower, or a leader whose fill never started
			}
			r = <-ch // our connection is running the fill, which stops with ctx
		}
		fr, _ := r.Val.(*fillResult)
		switch {
		case fr != nil && fr.leader == c:
			// Ours: a result, or our open rows to continue.
			if fr.handoff != nil {
				return fr.handoff, nil
			}
			return fr.res.Rows(), nil
		case r.Err != nil && claim.get() == claimFill:
			// Our connection ran it and failed: the error is ours, as pgx's.
			c.afterStatement(false)
			return nil, r.Err
		case fr != nil && fr.res != nil:
			return fr.res.Rows(), nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !errors.Is(r.Err, errNotShared) {
			break // the leader's query failed: ours runs on its own
		}
	}
	return c.passThrough(direct, false)
}

// runFill runs the query on the leader's connection and stores its result when it
// is complete and within the limits. The stamp is taken before the query is sent.
func (rp *readPath) runFill(ctx context.Context, c *Conn, key string, tags tagsFunc, ttl time.Duration, direct queryFunc) (*fillResult, error) {
	stamp := rp.cache.Stamp()
	rows, err := direct()
	if err != nil {
		return nil, err
	}
	cols, err := querycache.ColumnsOf(rows)
	if err != nil {
		return &fillResult{handoff: rows, leader: c}, nil
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
			return nil, err
		}
		if b.Add(dest) != nil {
			rp.cache.CountOverLimit()
			return &fillResult{handoff: newHandoffRows(b, dest, rows), leader: c}, nil
		}
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	res, err := b.Result()
	if err != nil {
		return nil, err
	}
	// A fill the cache refuses (stale, dropped while unusable, Redis down) still
	// answers this query: the error only means a later miss.
	_ = rp.cache.Store(ctx, key, res, tags(stamp), stamp, ttl)
	return &fillResult{res: res, leader: c}, nil
}
