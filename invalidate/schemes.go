package invalidate

import (
	"slices"
	"sync"

	"github.com/pgcache/pgcache/querycache"
)

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
	return true
}

// Of returns the schemes of rel. The slice must not be modified.
func (r *Schemes) Of(rel querycache.Relation) []querycache.Scheme {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byRel[rel]
}

func containsScheme(list []querycache.Scheme, s querycache.Scheme) bool {
	return slices.ContainsFunc(list, func(x querycache.Scheme) bool { return slices.Equal(x.Columns, s.Columns) })
}
