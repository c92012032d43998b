package driver

import (
	"sync"
	"sync/atomic"

	"github.com/pgcache/pgcache/querycache"
)

// fence gives one *sql.DB read-your-writes without waiting for the change stream:
// after a statement that may have written completes (an autocommit statement, or a
// COMMIT), reads bypass the cache until the invalidations of everything committed
// before it are applied, that is until the watermark reaches a WAL position read
// after the write completed.
//
// Reading that position costs a round trip, so it is not read per write: writes are
// counted, and the next cacheable read reads it once for all the writes completed
// before it (together with the session identity, see sessionQuery).
//
// The fence is global to the *sql.DB, not per relation: a write may change other
// relations through triggers, rules or functions, and a fence that missed one would
// serve the writer its own stale data.
type fence struct {
	writes atomic.Uint64 // statements that may have written and have completed
	lsn    atomic.Uint64 // reads bypass the cache until the watermark reaches it

	mu      sync.Mutex
	covered uint64 // writes whose commit is at or below lsn
}

// wrote records that a statement that may have written has completed.
func (f *fence) wrote() { f.writes.Add(1) }

// pending returns the write count a read must cover, and whether the fence lacks
// a position for some of them.
func (f *fence) pending() (writes uint64, stale bool) {
	w := f.writes.Load()
	f.mu.Lock()
	defer f.mu.Unlock()
	return w, w > f.covered
}

// cover records that a WAL position read after the first writes statements
// completed covers them.
func (f *fence) cover(writes uint64, lsn querycache.LSN) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if writes <= f.covered {
		return // nothing new to cover: the position was read for the session only
	}
	f.covered = writes
	if uint64(lsn) > f.lsn.Load() {
		f.lsn.Store(uint64(lsn))
	}
}

// holds reports whether reads must still bypass the cache at watermark.
func (f *fence) holds(watermark querycache.LSN) bool {
	return uint64(watermark) < f.lsn.Load()
}
