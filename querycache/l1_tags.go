package querycache

import (
	"sync"
	"sync/atomic"
)

// tagTable remembers, for a bounded number of tags, the commit LSN of each tag's
// last invalidation, and a floor: the highest LSN of any tag it forgot. A tag it
// does not remember counts as invalidated at the floor. Readers never lock; writers
// (Apply) are serialized by mu.
//
// Tags are forgotten in the order they were invalidated, oldest first: with the
// change stream delivering commits in LSN order that keeps the floor as low as a
// bound of that size allows, so forgetting rarely invalidates a live entry.
type tagTable struct {
	lsns  sync.Map      // Tag -> LSN
	floor atomic.Uint64 // LSN

	mu    sync.Mutex
	max   int
	order []tagAt // ring buffer of invalidations in the order applied
	head  int     // index of the oldest element of order
	count int     // elements in order
	live  int     // tags in lsns
}

type tagAt struct {
	tag Tag
	lsn LSN
}

func newTagTable(max int) *tagTable {
	return &tagTable{max: max}
}

// ringCap is the most records the ring holds. It may hold stale records of tags
// invalidated again later: twice the bound leaves room for them before a live tag
// has to be forgotten.
func (t *tagTable) ringCap() int { return 2 * t.max }

// lastInvalidated returns the LSN of tag's last invalidation, or the floor.
//
// It reads the map before the floor; forget raises the floor before it deletes. A
// reader that misses the tag because it was just forgotten therefore sees the raised
// floor, never a floor from before the tag was forgotten.
func (t *tagTable) lastInvalidated(tag Tag) LSN {
	if v, ok := t.lsns.Load(tag); ok {
		return v.(LSN)
	}
	return LSN(t.floor.Load())
}

// invalidate records that tags were invalidated at lsn. An older LSN than the one
// recorded changes nothing (replays are harmless).
func (t *tagTable) invalidate(tags []Tag, lsn LSN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tag := range tags {
		if v, ok := t.lsns.Load(tag); ok {
			if v.(LSN) >= lsn {
				continue
			}
		} else {
			if LSN(t.floor.Load()) >= lsn {
				continue // the floor already says as much
			}
			t.live++
		}
		t.lsns.Store(tag, lsn)
		t.push(tagAt{tag, lsn})
	}
}

// push appends to the ring, forgetting the oldest records while the ring is full or
// more tags are remembered than allowed.
func (t *tagTable) push(a tagAt) {
	if t.count == len(t.order) {
		t.makeRoom()
	}
	for t.count == len(t.order) || t.live > t.max {
		t.popOldest()
	}
	t.order[(t.head+t.count)%len(t.order)] = a
	t.count++
}

// makeRoom grows a full ring (it is allocated as invalidations come) up to
// ringCap, and past that drops its stale records: records of tags invalidated
// again later must not push live tags out. A compacted ring holds at most max
// live records, so compaction runs at most once per max pushes.
func (t *tagTable) makeRoom() {
	n := min(max(2*len(t.order), 64), t.ringCap())
	order := make([]tagAt, n)
	kept := 0
	for i := 0; i < t.count; i++ {
		a := t.order[(t.head+i)%len(t.order)]
		if n == len(t.order) { // full size already: keep live records only
			if v, ok := t.lsns.Load(a.tag); !ok || v.(LSN) != a.lsn {
				continue
			}
		}
		order[kept] = a
		kept++
	}
	t.order, t.head, t.count = order, 0, kept
}

func (t *tagTable) popOldest() {
	old := t.order[t.head]
	t.order[t.head] = tagAt{}
	t.head = (t.head + 1) % len(t.order)
	t.count--
	v, ok := t.lsns.Load(old.tag)
	if !ok || v.(LSN) != old.lsn {
		return // invalidated again later: a newer record is further on in the ring
	}
	if LSN(t.floor.Load()) < old.lsn {
		t.floor.Store(uint64(old.lsn)) // before the delete: see lastInvalidated
	}
	t.lsns.Delete(old.tag)
	t.live--
}

// size returns how many tags are remembered.
func (t *tagTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.live
}
