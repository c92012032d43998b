package querycache

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// This file is the second half of the analysis: a statement's names resolved with a
// session's catalog into a Plan.

type resolver struct {
	a     *Analyzer
	ctx   context.Context
	cache *catalogCache
	src   catalogSource

	reads  map[Relation]*readAcc
	order  []Relation
	reason Reason
	detail string

	facts   map[uint32]typeFacts // types by OID, accumulated over the statement and its views
	casts   *castTable
	unifies bool // the statement or a call converts values to a common type
	// present: types of values the statement may hold (columns, casts, results);
	// conditional: unsafe types values of unknown type may be converted to.
	present     map[uint32]bool
	conditional []uint32
	// textParams: parameters that must be text for the plan to hold (see
	// withParamTypes).
	textParams []int
}

type readAcc struct {
	wide  bool
	preds []Predicate
}

// occScope is one analyzed statement with its resolved relations, for column and
// operand resolution.
type occScope struct {
	st    *stmt
	rels  []*relInfo // per occurrence
	funcs map[qname]funcInfo
	ops   map[qname][]opOverload
	types map[qname]typeInfo

	funcMemo map[*pg.FuncCall]*callResult
	opMemo   map[*pg.A_Expr]*callResult
}

func (r *resolver) refuse(reason Reason, detail string) {
	if r.reason == ReasonNone {
		r.reason, r.detail = reason, detail
	}
}

// plan resolves a statement whose text raised no objection.
func (r *resolver) plan(st *stmt) (*Plan, error) {
	r.reads = map[Relation]*readAcc{}
	r.facts = map[uint32]typeFacts{}
	r.present = map[uint32]bool{}
	if err := r.resolve(st, 0, false); err != nil {
		return nil, err
	}
	if r.casts != nil {
		r.checkConditional()
		if r.unifies {
			r.checkUnified()
		}
	}
	p := &Plan{
		Fingerprint: st.fingerprint,
		Off:         st.directives.Off,
		TTL:         st.directives.TTL,
		CreatesTemp: st.createsTemp,
		textHash:    st.textHash,
		maxTags:     r.a.cfg.MaxTags,
	}
	if st.directiveErr != nil {
		p.DirectiveError = st.directiveErr.Error()
	}
	if r.reason == ReasonNone && len(r.order) == 0 {
		r.refuse(ReasonNoRelations, "")
	}
	if r.reason == ReasonNone && len(r.order) > r.a.cfg.MaxRelations {
		r.refuse(ReasonUnsupported, fmt.Sprintf("reads %d relations (more than %d)", len(r.order), r.a.cfg.MaxRelations))
	}
	if r.reason != ReasonNone {
		p.Reason, p.Detail = r.reason, r.detail
		return p, nil
	}
	p.Cacheable = true
	slices.Sort(r.textParams)
	p.textParams = r.textParams
	sort.Slice(r.order, func(i, j int) bool { return r.order[i].String() < r.order[j].String() })
	for _, rel := range r.order {
		acc := r.reads[rel]
		if acc.wide {
			p.Reads = append(p.Reads, Read{Relation: rel, Wide: true})
		} else {
			p.Reads = append(p.Reads, Read{Relation: rel, Predicates: acc.preds})
		}
	}
	return p, nil
}

// resolve checks one statement (the user's, or a view's definition when depth > 0)
// and adds its relations to the read set. forceWide: predicates do not apply (a
// view's base relations).
func (r *resolver) resolve(st *stmt, depth int, forceWide bool) error {
	if st.reason != ReasonNone {
		r.refuse(st.reason, st.detail)
		return nil
	}
	// Load everything the statement names, one query per kind.
	var relNames, funcNames, opNames, typeNames []qname
	for _, o := range st.occs {
		relNames = appendName(relNames, o.name)
	}
	funcNames = append(funcNames, st.funcs...)
	for _, u := range st.ops {
		opNames = appendName(opNames, u.name)
	}
	for _, c := range st.casts {
		typeNames = appendName(typeNames, c.typ)
	}
	for _, c := range st.conjuncts {
		for _, v := range c.values {
			if v.cast != nil {
				typeNames = appendName(typeNames, *v.cast)
			}
		}
	}
	ttl, max := r.a.cfg.CatalogTTL, r.a.cfg.MaxCatalogEntries
	rels, err := lookup(r.ctx, r.cache, func(c *catalogCache) map[qname]cached[*relInfo] { return c.rels }, relNames, ttl, max, r.src.relations)
	if err != nil {
		return err
	}
	funcs, err := lookup(r.ctx, r.cache, func(c *catalogCache) map[qname]cached[funcInfo] { return c.funcs }, funcNames, ttl, max, r.src.functions)
	if err != nil {
		return err
	}
	ops, err := lookup(r.ctx, r.cache, func(c *catalogCache) map[qname]cached[[]opOverload] { return c.ops }, opNames, ttl, max, r.src.operators)
	if err != nil {
		return err
	}
	types, err := lookup(r.ctx, r.cache, func(c *catalogCache) map[qname]cached[typeInfo] { return c.types }, typeNames, ttl, max, r.src.types)
	if err != nil {
		return err
	}
	if err := r.loadTypeFacts(funcs, ops, types); err != nil {
		return err
	}
	if r.casts == nil && (len(st.calls)+len(st.ops)+len(st.casts)+len(st.unifySites) > 0 || st.unifies) {
		if r.casts, err = r.cache.castTable(r.ctx, ttl, r.src.casts); err != nil {
			return err
		}
	}

	sc := &occScope{st: st, rels: make([]*relInfo, len(st.occs)), funcs: funcs, ops: ops, types: types,
		funcMemo: map[*pg.FuncCall]*callResult{}, opMemo: map[*pg.A_Expr]*callResult{}}
	for i, o := range st.occs {
		sc.rels[i] = rels[o.name]
		if info := sc.rels[i]; info != nil {
			for _, col := range info.columns {
				r.notePresent(col.t)
			}
		}
	}

	for _, u := range st.calls {
		if res := r.resolveFunc(sc, u); !res.ok {
			r.refuse(res.reason, res.detail)
		}
	}
	for _, u := range st.ops {
		if res := r.resolveOp(sc, u); !res.ok {
			r.refuse(res.reason, res.detail)
		}
	}
	for _, c := range st.casts {
		r.checkCast(sc, c)
	}
	r.unifies = r.unifies || st.unifies
	for _, site := range st.unifySites {
		r.checkSite(sc, site)
	}

	// Relations, and the predicates on each occurrence.
	preds := r.occurrencePredicates(sc, types)
	for i, o := range st.occs {
		info := sc.rels[i]
		if info == nil || !info.found {
			r.refuse(ReasonUnknownObject, "relation "+o.name.String())
			continue
		}
		if !r.checkRelation(info, false) {
			continue
		}
		if st.bareStrings {
			for name, col := range info.columns {
				if col.regType {
					r.refuse(ReasonVolatileCast, fmt.Sprintf("string literal may be read as %s.%s, of a reg* type", info.rel, name))
				}
			}
		}
		switch info.kind {
		case 'v':
			if depth >= r.a.cfg.MaxViewDepth {
				r.refuse(ReasonView, fmt.Sprintf("%s: views nested deeper than %d", info.rel, r.a.cfg.MaxViewDepth))
				continue
			}
			view := r.a.statement(info.viewDef).st
			if view.reason != ReasonNone {
				r.refuse(ReasonView, fmt.Sprintf("%s: %s", info.rel, view.reason))
				continue
			}
			if err := r.resolve(view, depth+1, true); err != nil {
				return err
			}
		case 'r', 'p':
			pred := preds[i]
			if forceWide {
				pred = nil
			}
			r.addRead(info, pred)
			if o.inh {
				// Published through its root (publish_via_partition_root), a
				// partitioned table's changes carry the root's name: its
				// partitions are not listed in the publication, yet covered.
				viaRoot := info.kind == 'p' && r.published(info.rel)
				for _, d := range info.descendants {
					if r.checkRelation(d, viaRoot) {
						r.addRead(d, pred)
					}
				}
			}
		default:
			r.refuse(ReasonUnsupported, fmt.Sprintf("%s: relation kind %q", info.rel, info.kind))
		}
	}
	return nil
}

func appendName(names []qname, n qname) []qname {
	if slices.Contains(names, n) {
		return names
	}
	return append(names, n)
}

// loadTypeFacts loads the facts of every type the statement's overloads and casts
// name that the resolver does not have yet.
func (r *resolver) loadTypeFacts(funcs map[qname]funcInfo, ops map[qname][]opOverload, types map[qname]typeInfo) error {
	var oids []uint32
	add := func(os ...uint32) {
		for _, o := range os {
			if _, ok := r.facts[o]; !ok && o != 0 && !slices.Contains(oids, o) {
				oids = append(oids, o)
			}
		}
	}
	for _, f := range funcs {
		add(f.asType)
		for _, p := range f.overloads {
			add(p.args...)
			add(p.variadic, p.ret)
		}
	}
	for _, list := range ops {
		for _, o := range list {
			add(o.left, o.right, o.result)
		}
	}
	for _, t := range types {
		add(t.array)
	}
	if len(oids) == 0 {
		return nil
	}
	facts, err := lookup(r.ctx, r.cache, func(c *catalogCache) map[uint32]cached[typeFacts] { return c.facts }, oids,
		r.a.cfg.CatalogTTL, r.a.cfg.MaxCatalogEntries, r.src.typeFacts)
	if err != nil {
		return err
	}
	for o, f := range facts {
		if f.oid != 0 { // the zero value: no such type
			r.facts[o] = f
		}
	}
	return nil
}

// checkSite checks the conversion of a site's values to their common type.
func (r *resolver) checkSite(sc *occScope, site *unifySite) {
	args := make([]callArg, len(site.nodes))
	for i, n := range site.nodes {
		args[i] = callArg{node: n, t: r.typeOf(sc, n, site.level, site.vis)}
	}
	r.checkCommonType(args)
}

// checkCommonType checks the conversion of values to their common type, which
// PostgreSQL takes among the values' types (text when all are literals). It is
// refused when a literal or parameter would be read as a type whose input is
// unsafe, or a value converted to another value's type with an unsafe implicit
// cast. When a value's type is not known, the statement is refused later if it
// holds values of such types at all (checkUnified). NULL is read by no one.
func (r *resolver) checkCommonType(args []callArg) {
	var types []uint32
	literal := false
	for _, a := range args {
		switch {
		case a.node.GetAConst() != nil && a.node.GetAConst().Isnull:
		case a.t.oid == oidUnknown || a.node.GetParamRef() != nil:
			literal = true
		case !a.t.concrete():
			r.unifies = true
			return
		default:
			for _, o := range []uint32{a.t.oid, a.t.base, a.t.elem} {
				if o != 0 && !slices.Contains(types, o) {
					types = append(types, o)
				}
			}
		}
	}
	for _, t := range types {
		if isUnsafeInput(t) && (literal || len(types) > 1) {
			r.refuse(ReasonVolatileCast, "values converted to a common type with values of type "+r.typeName(t))
			return
		}
		for _, src := range r.casts.unsafeImplicitFrom[t] {
			if slices.Contains(types, src) {
				r.refuse(ReasonVolatileCast, fmt.Sprintf("values of type %s converted to %s", r.typeName(src), r.typeName(t)))
				return
			}
		}
	}
}

// checkUnified refuses a statement that converts values to a common type (CASE,
// COALESCE, ARRAY[], IN lists, set operations, ...) when the conversion may run an
// unsafe function: when it holds values of a type whose text input depends on more
// than the key (a literal or parameter may be read as one), or values of a type
// and of another with an unsafe implicit cast to it (time and timetz).
func (r *resolver) checkUnified() {
	for _, t := range slices.Sorted(maps.Keys(r.present)) {
		if isUnsafeInput(t) {
			r.refuse(ReasonVolatileCast, fmt.Sprintf("values converted to a common type, with values of type %s", r.typeName(t)))
			return
		}
		if !r.casts.unsafeImplicit[t] {
			continue
		}
		for _, src := range r.casts.unsafeImplicitFrom[t] {
			if r.present[src] {
				r.refuse(ReasonVolatileCast, fmt.Sprintf("values converted to a common type, with values of types %s and %s", r.typeName(src), r.typeName(t)))
				return
			}
		}
	}
}

// checkRelation refuses relations whose changes the cache cannot see. A
// partitioned table holds no rows of its own: its partitions are checked in its
// place (PostgreSQL publishes the partitions, not the parent, unless the
// publication publishes via the root, which coveredByRoot reports).
func (r *resolver) checkRelation(info *relInfo, coveredByRoot bool) bool {
	name := info.rel.String()
	switch {
	case info.system():
		r.refuse(ReasonSystemCatalog, name)
	case info.persistence == 't':
		r.refuse(ReasonTemporaryTable, name)
	case info.persistence == 'u':
		r.refuse(ReasonUnloggedTable, name)
	case info.kind == 'f':
		r.refuse(ReasonForeignTable, name)
	case info.kind == 'S':
		r.refuse(ReasonSequence, name)
	case info.kind == 'm':
		r.refuse(ReasonMaterializedView, name)
	case info.rowSecurity:
		r.refuse(ReasonRowSecurity, name)
	case info.kind != 'v' && info.kind != 'p' && !coveredByRoot && !r.published(info.rel):
		r.refuse(ReasonNotPublished, name)
	default:
		return true
	}
	return false
}

// published reports whether a relation's changes reach the invalidator.
func (r *resolver) published(rel Relation) bool {
	return r.a.cfg.Published == nil || r.a.cfg.Published(rel)
}

// addRead adds a reading of a relation: with a predicate, or wide (pred nil).
func (r *resolver) addRead(info *relInfo, pred *Predicate) {
	acc, ok := r.reads[info.rel]
	if !ok {
		acc = &readAcc{}
		r.reads[info.rel] = acc
		r.order = append(r.order, info.rel)
	}
	if pred == nil {
		acc.wide, acc.preds = true, nil
		return
	}
	if acc.wide {
		return
	}
	for _, p := range acc.preds {
		if predicateEqual(p, *pred) {
			return
		}
	}
	acc.preds = append(acc.preds, *pred)
}

func predicateEqual(a, b Predicate) bool {
	return slices.Equal(a.Columns, b.Columns) && slices.EqualFunc(a.Tuples, b.Tuples, func(x, y []ValueSource) bool { return slices.Equal(x, y) })
}

// findColumn resolves a column reference at a level to an occurrence, as
// PostgreSQL would: -1 when it is not a column of exactly one relation of the level
// (an outer reference, an ambiguous name, a column of a subquery or function).
// Only the items vis covers are searched (the whole level for predicates, whose
// targets say which occurrences they may restrict).
func findColumn(sc *occScope, lvl int, vis visRange, fields []string, offline bool) (int, string) {
	if lvl < 0 || lvl >= len(sc.st.levels) {
		return -1, ""
	}
	L := sc.st.levels[lvl]
	col := fields[len(fields)-1]
	found := -1
	switch len(fields) {
	case 1:
		if offline {
			if len(L.items) == 1 && L.items[0].occ >= 0 {
				return L.items[0].occ, col
			}
			return -1, ""
		}
		for i, it := range L.items {
			if !vis.has(i) {
				continue
			}
			if it.occ < 0 {
				return -1, "" // a subquery or function may have the column: unknown
			}
			info := sc.rels[it.occ]
			if info == nil || !info.found {
				return -1, ""
			}
			if _, ok := info.columns[col]; ok {
				if found >= 0 {
					return -1, "" // ambiguous (or merged by USING)
				}
				found = it.occ
			}
		}
	case 2:
		for i, it := range L.items {
			if vis.has(i) && it.binding == fields[0] {
				if found >= 0 || it.occ < 0 {
					return -1, ""
				}
				found = it.occ
			}
		}
	case 3:
		for i, it := range L.items {
			if it.occ < 0 || !vis.has(i) {
				continue
			}
			o := sc.st.occs[it.occ]
			if o.aliased || o.name.name != fields[1] {
				continue
			}
			schema := o.name.schema
			if info := sc.rels[it.occ]; schema == "" && info != nil {
				schema = info.rel.Schema
			}
			if schema == fields[0] {
				if found >= 0 {
					return -1, ""
				}
				found = it.occ
			}
		}
	}
	if found < 0 {
		return -1, ""
	}
	if !offline {
		info := sc.rels[found]
		if info == nil || !info.found {
			return -1, ""
		}
		if _, ok := info.columns[col]; !ok {
			return -1, ""
		}
	}
	return found, col
}

// occurrencePredicates turns the statement's conjuncts into one predicate per
// occurrence (nil: wide).
func (r *resolver) occurrencePredicates(sc *occScope, types map[qname]typeInfo) []*Predicate {
	type colPred struct {
		class  ValueClass
		values []ValueSource
	}
	perOcc := make([]map[string]colPred, len(sc.st.occs))
	for _, c := range sc.st.conjuncts {
		occ, col := findColumn(sc, c.level, visAll, c.fields, false)
		if occ < 0 {
			continue
		}
		var t *target
		for i := range c.targets {
			if c.targets[i].occ == occ {
				t = &c.targets[i]
			}
		}
		if t == nil || (c.kind == predIsNull && !t.allowIsNull) {
			continue
		}
		info := sc.rels[occ]
		ci := info.columns[col]
		if ci.class == ClassNone {
			continue
		}
		if perOcc[occ] == nil {
			perOcc[occ] = map[string]colPred{}
		}
		if _, seen := perOcc[occ][col]; seen {
			continue // the first conjunct on a column is enough
		}
		values, ok := predicateValues(c, ci.class, types)
		if !ok {
			continue
		}
		perOcc[occ][col] = colPred{class: ci.class, values: values}
	}
	out := make([]*Predicate, len(sc.st.occs))
	for i, cols := range perOcc {
		if len(cols) == 0 {
			continue
		}
		names := make([]string, 0, len(cols))
		for n := range cols {
			names = append(names, n)
		}
		// A primary key fully covered decides the row: its columns are enough,
		// and schemes over the key are the ones invalidate always has old values for.
		if pk := sc.rels[i].primaryKey; len(pk) > 0 && subset(pk, names) {
			names = slices.Clone(pk)
		}
		sort.Strings(names)
		total := 1
		for _, n := range names {
			total *= len(cols[n].values)
		}
		if total > r.a.cfg.MaxTags {
			continue
		}
		p := &Predicate{}
		lists := make([][]ValueSource, len(names))
		for j, n := range names {
			p.Columns = append(p.Columns, PredicateColumn{Name: n, Class: cols[n].class})
			lists[j] = cols[n].values
		}
		p.Tuples = crossProduct(lists)
		out[i] = p
	}
	return out
}

func subset(small, big []string) bool {
	for _, s := range small {
		if !slices.Contains(big, s) {
			return false
		}
	}
	return true
}

func crossProduct(lists [][]ValueSource) [][]ValueSource {
	out := [][]ValueSource{nil}
	for _, l := range lists {
		var next [][]ValueSource
		for _, prefix := range out {
			for _, v := range l {
				t := append(slices.Clone(prefix), v)
				next = append(next, t)
			}
		}
		out = next
	}
	return out
}

// predicateValues converts a conjunct's values for a column of class c. A literal
// that does not canonicalize with certainty, or a cast to a type of another class,
// makes the conjunct unusable.
func predicateValues(c *conjunct, class ValueClass, types map[qname]typeInfo) ([]ValueSource, bool) {
	var out []ValueSource
	for _, v := range c.values {
		if v.cast != nil {
			t := types[*v.cast]
			if !t.found || t.class != class {
				return nil, false
			}
		}
		switch v.kind {
		case valParam:
			if c.kind == predAny {
				out = append(out, ValueSource{Kind: ValueParamArray, Param: v.param})
			} else {
				out = append(out, ValueSource{Kind: ValueParam, Param: v.param})
			}
		case valNull:
			out = append(out, ValueSource{Kind: ValueNull})
		case valInt:
			if class != ClassInt && class != ClassNumeric {
				return nil, false
			}
			cv, ok := CanonicalText(class, v.text)
			if !ok {
				return nil, false
			}
			out = append(out, ValueSource{Kind: ValueConst, Value: cv})
		case valNumeric:
			if class != ClassNumeric {
				return nil, false
			}
			cv, ok := CanonicalText(class, v.text)
			if !ok {
				return nil, false
			}
			out = append(out, ValueSource{Kind: ValueConst, Value: cv})
		case valString:
			cv, ok := canonicalString(class, v.text)
			if !ok {
				return nil, false
			}
			out = append(out, ValueSource{Kind: ValueConst, Value: cv})
		case valBool:
			if class != ClassBool {
				return nil, false
			}
			out = append(out, ValueSource{Kind: ValueConst, Value: canon(v.text)})
		default:
			return nil, false
		}
	}
	return out, true
}

// offlinePlan is the catalog-free plan: what the text says, with the relations as
// written and the predicates that do not need column types.
func offlinePlan(st *stmt, base Plan) *Plan {
	p := base
	if st.reason != ReasonNone {
		p.Reason, p.Detail = st.reason, st.detail
		return &p
	}
	p.Reason = ReasonNotChecked
	p.Unchecked = []string{
		"names resolved through the search_path (relation kinds, views, partitions, row security, publication)",
		"function and operator volatility",
		"column types (which predicates can take precise tags)",
	}
	sc := &occScope{st: st, rels: make([]*relInfo, len(st.occs))}
	preds := make([]*Predicate, len(st.occs))
	for _, c := range st.conjuncts {
		occ, col := findColumn(sc, c.level, visAll, c.fields, true)
		if occ < 0 {
			continue
		}
		allowed := false
		for _, t := range c.targets {
			if t.occ == occ && (c.kind != predIsNull || t.allowIsNull) {
				allowed = true
			}
		}
		if !allowed {
			continue
		}
		pr := preds[occ]
		if pr == nil && len(c.values) > base.maxTags {
			continue
		}
		if pr == nil {
			pr = &Predicate{Tuples: [][]ValueSource{nil}}
			preds[occ] = pr
		}
		if slices.ContainsFunc(pr.Columns, func(x PredicateColumn) bool { return x.Name == col }) {
			continue
		}
		var vals []ValueSource
		for _, v := range c.values {
			switch {
			case v.kind == valParam && c.kind == predAny:
				vals = append(vals, ValueSource{Kind: ValueParamArray, Param: v.param})
			case v.kind == valParam:
				vals = append(vals, ValueSource{Kind: ValueParam, Param: v.param})
			case v.kind == valNull:
				vals = append(vals, ValueSource{Kind: ValueNull})
			default:
				vals = append(vals, ValueSource{Kind: ValueConst, Value: canon(v.text)})
			}
		}
		if len(pr.Tuples)*len(vals) > base.maxTags {
			continue // as the catalog-checked plan does: fewer columns, never more tuples
		}
		pr.Columns = append(pr.Columns, PredicateColumn{Name: col})
		var next [][]ValueSource
		for _, t := range pr.Tuples {
			for _, v := range vals {
				next = append(next, append(slices.Clone(t), v))
			}
		}
		pr.Tuples = next
	}
	seen := map[Relation]int{}
	for i, o := range st.occs {
		rel := Relation{Schema: o.name.schema, Name: o.name.name}
		idx, ok := seen[rel]
		if !ok {
			idx = len(p.Reads)
			seen[rel] = idx
			p.Reads = append(p.Reads, Read{Relation: rel})
		}
		rd := &p.Reads[idx]
		if preds[i] == nil || rd.Wide {
			rd.Wide, rd.Predicates = true, nil
			continue
		}
		rd.Predicates = append(rd.Predicates, sortedPredicate(*preds[i]))
	}
	return &p
}

// sortedPredicate orders a predicate's columns (and tuple values) by column name.
func sortedPredicate(p Predicate) Predicate {
	idx := make([]int, len(p.Columns))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return p.Columns[idx[a]].Name < p.Columns[idx[b]].Name })
	out := Predicate{Columns: make([]PredicateColumn, len(idx))}
	for i, j := range idx {
		out.Columns[i] = p.Columns[j]
	}
	for _, t := range p.Tuples {
		nt := make([]ValueSource, len(idx))
		for i, j := range idx {
			nt[i] = t[j]
		}
		out.Tuples = append(out.Tuples, nt)
	}
	return out
}
