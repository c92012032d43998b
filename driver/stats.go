package driver

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/pgcache/pgcache/querycache"
)

// Stats is a snapshot of what one *sql.DB's cache did and how its change stream is.
type Stats struct {
	Mode Mode
	// Usable reports whether the cache is used now; if not, UnusableReason says why.
	Usable         bool
	UnusableReason string
	// Cache holds the counters: hits, misses, fills, bypasses by reason, errors.
	querycache.Stats
	// Stream is the change stream's state ("" before the first connection). With
	// a cache shared through Redis it is "leading (<state>)" on the instance that
	// consumes the stream and "following" on the others.
	Stream string
	// StreamProblem says why the change stream cannot run, and so why nothing is
	// cached, when it gave up ("" otherwise).
	StreamProblem string
	// Watermark is the highest commit LSN whose invalidations are applied.
	Watermark querycache.LSN
	// Lag is how far the applied invalidations are behind the database.
	Lag time.Duration
	// StreamErrors counts failures of the shared cache's fan-out (Redis down or
	// refusing): while they last, reads go to PostgreSQL.
	StreamErrors uint64
}

// Stats returns the connector's statistics.
func (c *Connector) Stats() Stats {
	st := Stats{Mode: c.cfg.Mode}
	if c.rp == nil {
		return st
	}
	st.Stats = c.rp.cache.Stats()
	st.Usable, st.UnusableReason = c.rp.cache.Usable()
	st.Watermark = c.rp.cache.Watermark()
	if p := c.stream.failure.Load(); p != nil {
		st.StreamProblem = *p
	}
	if sh := c.stream.shared.Load(); sh != nil {
		st.Stream, st.Lag, st.StreamErrors = "following", sh.Health().Lag, sh.Errors()
		if lh, ok := sh.LeaderHealth(); ok {
			st.Stream = "leading (" + lh.State.String() + ")"
		}
	} else if l := c.stream.listener.Load(); l != nil {
		h := l.Health()
		st.Stream, st.Lag = h.State.String(), h.LagTime
	}
	return st
}

// StatsOf returns the statistics of a *sql.DB opened with the pgcache driver (by
// sql.Open or OpenDB). It borrows a connection from the pool for a moment.
func StatsOf(ctx context.Context, db *sql.DB) (Stats, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return Stats{}, err
	}
	defer conn.Close()
	var st Stats
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*Conn)
		if !ok {
			return errors.New("pgcache: StatsOf: not a pgcache *sql.DB")
		}
		st = c.connector.Stats()
		return nil
	})
	return st, err
}
