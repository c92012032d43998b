package invalidate

import (
	"context"
	"slices"
	"sync"

	"github.com/pgcache/pgcache/querycache"
)

// SchemeRegistry is what the driver asks before it stores an entry whose tags use a
// scheme's row tags.
type SchemeRegistry interface {
	// Activate registers s if needed and reports from which watermark on every
	// applied change includes s's row tags. ok is false while s cannot be used (not
	// yet adopted by the consumer, or the registry is full): the entry must then
	// take its relation's wide tag instead. An entry may use s's row tags only when
	// its stamp's watermark is at least activeFrom. now is the caller's watermark.
	Activate(ctx context.Context, s querycache.Scheme, now querycache.LSN) (activeFrom querycache.LSN, ok bool)
}

// Schemes is the registry of the predicate column sets ("schemes") that cached
// entries of each relation use. A row change of a relation invalidates, for every
// scheme of the relation, the row tags of its old and new values; a scheme missing
// from the registry would leave its entries stale, so a fill must register its
// plan's schemes before it takes its stamp (see Register).
//
// It is bounded: past the bounds Register refuses, and the caller must not cache the
// entry with row tags of that scheme. Schemes are never removed: they are few (one
// per distinct WHERE shape of a relation) and forgetting one would be unsafe.
type Schemes struct {
	maxPerRelation int
	maxRelations   int

	mu    sync.RWMutex
	byRel map[querycache.Relation][]querycache.Scheme
	// inflight is the end of the transaction the consumer is tagging (see begin),
	// and from its value when the latest scheme was registered.
	inflight, from querycache.LSN
}

// Scheme registry bounds, used when NewSchemes is given zero.
const (
	DefaultMaxSchemesPerRelation = 64
	DefaultMaxSchemeRelations    = 10000
)

// NewSchemes returns an empty registry with the given bounds (zero: the defaults).
func NewSchemes(maxPerRelation, maxRelations int) *Schemes {
	if maxPerRelation <= 0 {
		maxPerRelation = DefaultMaxSchemesPerRelation
	}
	if maxRelations <= 0 {
		maxRelations = DefaultMaxSchemeRelations
	}
	return &Schemes{maxPerRelation: maxPerRelation, maxRelations: maxRelations, byRel: make(map[querycache.Relation][]querycache.Scheme)}
}

// Register records s and reports whether it is registered. Changes whose tags are
// computed after Register returned include s's row tags; so a fill that registers
// its schemes, then takes its stamp, then reads the database, is invalidated by
// every later change of its rows.
func (r *Schemes) Register(s querycache.Scheme) bool {
	r.mu.RLock()
	known := containsScheme(r.byRel[s.Relation], s)
	r.mu.RUnlock()
	if known {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	list, ok := r.byRel[s.Relation]
	switch {
	case containsScheme(list, s):
		return true
	case !ok && len(r.byRel) >= r.maxRelations, len(list) >= r.maxPerRelation:
		return false
	}
	// Copy on write: readers hold the old slice without a lock.
	r.byRel[s.Relation] = append(slices.Clip(list), querycache.Scheme{Relation: s.Relation, Columns: slices.Clone(s.Columns)})
	r.from = r.inflight
	return true
}

// begin is called by the Consumer before it tags a transaction ending at end:
// a scheme registered from now on may have missed that transaction's tags.
func (r *Schemes) begin(end querycache.LSN) {
	r.mu.Lock()
	r.inflight = max(r.inflight, end)
	r.mu.Unlock()
}

// Activate is Register for the single-process mode, where the consumer reads this
// registry for every transaction. It implements SchemeRegistry. The scheme is
// active from the end of the transaction the consumer was tagging when the latest
// scheme was registered: transactions tagged before, without the new scheme's row
// tags, may not have been visible yet to a reader stamped below that.
func (r *Schemes) Activate(_ context.Context, s querycache.Scheme, _ querycache.LSN) (querycache.LSN, bool) {
	ok := r.Register(s)
	r.mu.RLock()
	from := r.from
	r.mu.RUnlock()
	return from, ok
}

// Of returns the schemes of rel. The slice must not be modified.
func (r *Schemes) Of(rel querycache.Relation) []querycache.Scheme {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byRel[rel]
}

// known reports whether s is registered.
func (r *Schemes) known(s querycache.Scheme) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return containsScheme(r.byRel[s.Relation], s)
}

func containsScheme(list []querycache.Scheme, s querycache.Scheme) bool {
	return slices.ContainsFunc(list, func(x querycache.Scheme) bool { return slices.Equal(x.Columns, s.Columns) })
}
