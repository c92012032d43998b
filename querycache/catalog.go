package querycache

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Querier runs a catalog query on the session's own connection, so names resolve
// through that session's search_path. *pgx.Conn, pgx.Tx and *pgxpool.Conn satisfy it.
// Query must be safe to call while the connection is idle; the analyzer reads every
// row and closes the rows before it returns.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// relInfo is what the catalog says about one relation name.
type relInfo struct {
	found       bool
	oid         uint32
	rel         Relation
	kind        byte // pg_class.relkind
	persistence byte // pg_class.relpersistence
	rowSecurity bool
	columns     map[string]colInfo
	primaryKey  []string   // sorted; nil without a primary key
	descendants []*relInfo // inheritance children and partitions, all levels
	viewDef     string     // views: pg_get_viewdef
	rowType     uint32     // pg_class.reltype: the type of a whole-row reference
}

// system reports whether the relation is in a schema logical replication never
// publishes.
func (r *relInfo) system() bool {
	switch r.rel.Schema {
	case "pg_catalog", "information_schema", "pg_toast":
		return true
	}
	return false
}

type colInfo struct {
	typeOID  uint32    // the base type for domains
	t        typeFacts // the declared type
	class    ValueClass
	regType  bool // a reg* type: its text form depends on the catalog
	dateTime bool // date, time, timestamp, interval and their tz variants
}

// procInfo is one function of pg_proc.
type procInfo struct {
	oid        uint32
	schema     string
	name       string
	builtin    bool   // in pg_catalog and created by initdb
	signature  string // regprocedure text, for details: "age(timestamp with time zone)"
	key        string // procKey(name, args): the settings-only list's key
	args       []uint32
	ndefaults  int
	variadic   uint32 // provariadic: the element type of a VARIADIC parameter, 0 if none
	ret        uint32
	volatility byte // pg_proc.provolatile
}

// funcInfo is what a function name (as written) resolves to.
type funcInfo struct {
	overloads []*procInfo
	// asType is the type the name also names (to_regtype), 0 if none: a call with
	// one argument and no exact overload is then a cast to that type.
	asType uint32
}

// opOverload is one operator of a name with the function implementing it.
type opOverload struct {
	left, right, result uint32 // left is 0 for prefix operators
	proc                *procInfo
}

type typeInfo struct {
	found bool
	facts typeFacts
	class ValueClass
	array uint32 // the array type over this type, 0 if none
}

// Type kinds (typeFacts.kind), from pg_type.typtype and typelem.
const (
	kindUnknown    byte = 0
	kindBase       byte = 'b' // scalar base type (or fixed-length subscriptable, e.g. name)
	kindArray      byte = 'a' // varlena array
	kindEnum       byte = 'e'
	kindRange      byte = 'r'
	kindMultirange byte = 'm'
	kindComposite  byte = 'c'
	kindPseudo     byte = 'p'
	kindDomain     byte = 'd'
)

// typeFacts is what overload and cast checks need to know about a type.
type typeFacts struct {
	oid      uint32 // 0 when unknown; oidUnknown for string literals and NULL
	kind     byte
	elem     uint32 // arrays: the element type
	base     uint32 // domains: the base type (one level); otherwise oid
	baseKind byte   // kind of base; kindDomain for a domain over a domain
	regType  bool   // a reg* type, or built on one: text input and output read the catalog
	dateTime bool   // a date/time type, or built on one: text input accepts 'now'
	name     string // format_type, for details; "" for column types
	// category and preferred are pg_type.typcategory and typispreferred (0 for
	// column types), which decide how PostgreSQL types literals in a call.
	category  byte
	preferred bool
}

// castInfo is one row of pg_cast.
type castInfo struct {
	context byte      // 'i' implicit, 'a' assignment, 'e' explicit
	method  byte      // 'f' function, 'i' input/output, 'b' binary
	fn      *procInfo // method 'f'
}

// castTable is pg_cast, with what overload resolution derives from it.
type castTable struct {
	casts map[[2]uint32]castInfo
	// complete is false when the table was cut at its bound: nothing is then
	// excluded because of a missing cast, and every conversion counts as unsafe.
	complete bool
	// unsafeImplicit: targets of implicit casts whose function is not safe
	// (time to timetz, text to regclass, user casts): an argument converted to
	// such a parameter type may run it.
	unsafeImplicit map[uint32]bool
	// unsafeImplicitFrom: the sources of those casts, per target.
	unsafeImplicitFrom map[uint32][]uint32
	// unsafeInto: targets of any cast whose function is not safe.
	unsafeInto map[uint32]bool
}

// catalogSource loads catalog facts for names. The real one queries PostgreSQL
// through a Querier; tests and the fuzz target use an in-memory one.
type catalogSource interface {
	relations(ctx context.Context, names []qname) (map[qname]*relInfo, error)
	functions(ctx context.Context, names []qname) (map[qname]funcInfo, error)
	operators(ctx context.Context, names []qname) (map[qname][]opOverload, error)
	types(ctx context.Context, names []qname) (map[qname]typeInfo, error)
	typeFacts(ctx context.Context, oids []uint32) (map[uint32]typeFacts, error)
	casts(ctx context.Context) (*castTable, error)
}

// regTypeOIDs are the reg* types: their input and output depend on the catalog.
var regTypeOIDs = map[uint32]bool{24: true, 2202: true, 2203: true, 2204: true, 2205: true, 2206: true,
	3734: true, 3769: true, 4089: true, 4096: true, 4191: true}

// dateTimeOIDs are the date/time types, whose text input accepts 'now' and the like.
var dateTimeOIDs = map[uint32]bool{1082: true, 1083: true, 1266: true, 1114: true, 1184: true, 1186: true,
	3910: true, 3912: true, 3908: true, 4535: true, 4533: true, 4534: true} // and their ranges/multiranges

func quotedName(q qname) string {
	if q.schema == "" {
		return quoteIdent(q.name)
	}
	return quoteIdent(q.schema) + "." + quoteIdent(q.name)
}

// pgCatalog is the catalogSource over a session's connection.
type pgCatalog struct{ q Querier }

const relationsSQL = `
SELECT n.i::int, c.oid, ns.nspname, c.relname, c.relkind::text, c.relpersistence::text, c.relrowsecurity,
       CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) ELSE '' END, c.reltype
FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i)
JOIN pg_class c ON c.oid = to_regclass(n.name)
JOIN pg_namespace ns ON ns.oid = c.relnamespace`

const descendantsSQL = `
WITH RECURSIVE tree(root, child, depth) AS (
    SELECT inhparent, inhrelid, 1 FROM pg_inherits WHERE inhparent = ANY($1::oid[])
  UNION ALL
    SELECT t.root, i.inhrelid, t.depth + 1 FROM tree t JOIN pg_inherits i ON i.inhparent = t.child WHERE t.depth < 32
)
SELECT t.root, c.oid, ns.nspname, c.relname, c.relkind::text, c.relpersistence::text, c.relrowsecurity
FROM tree t JOIN pg_class c ON c.oid = t.child JOIN pg_namespace ns ON ns.oid = c.relnamespace
LIMIT 100000`

const columnsSQL = `
SELECT a.attrelid, a.attname, a.atttypid, t.typtype::text, t.typelem, t.typlen, t.typbasetype,
       coalesce(bt.typtype::text, ''), coalesce(bt.typelem, 0), coalesce(bt.typlen, 0),
       coalesce(coll.collisdeterministic, true)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
LEFT JOIN pg_collation coll ON coll.oid = a.attcollation
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped`

const primaryKeysSQL = `
SELECT i.indrelid, array_agg(a.attname::text ORDER BY a.attname)
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = ANY($1::oid[]) AND i.indisprimary
GROUP BY i.indrelid`

func (c pgCatalog) relations(ctx context.Context, names []qname) (map[qname]*relInfo, error) {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = quotedName(n)
	}
	out := make(map[qname]*relInfo, len(names))
	for _, n := range names {
		out[n] = &relInfo{}
	}
	byOID := map[uint32][]*relInfo{}
	var oids []uint32
	rows, err := c.q.Query(ctx, relationsSQL, quoted)
	if err != nil {
		return nil, fmt.Errorf("querycache: resolve relations: %w", err)
	}
	for rows.Next() {
		var i int
		r := &relInfo{found: true}
		var kind, persistence string
		if err := rows.Scan(&i, &r.oid, &r.rel.Schema, &r.rel.Name, &kind, &persistence, &r.rowSecurity, &r.viewDef, &r.rowType); err != nil {
			rows.Close()
			return nil, fmt.Errorf("querycache: resolve relations: %w", err)
		}
		r.kind, r.persistence = kind[0], persistence[0]
		out[names[i-1]] = r
		byOID[r.oid] = append(byOID[r.oid], r)
		oids = append(oids, r.oid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: resolve relations: %w", err)
	}
	if len(oids) == 0 {
		return out, nil
	}
	// Descendants: inheritance children and partitions.
	rows, err = c.q.Query(ctx, descendantsSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("querycache: relation descendants: %w", err)
	}
	for rows.Next() {
		var root uint32
		d := &relInfo{found: true}
		var kind, persistence string
		if err := rows.Scan(&root, &d.oid, &d.rel.Schema, &d.rel.Name, &kind, &persistence, &d.rowSecurity); err != nil {
			rows.Close()
			return nil, fmt.Errorf("querycache: relation descendants: %w", err)
		}
		d.kind, d.persistence = kind[0], persistence[0]
		for _, r := range byOID[root] {
			r.descendants = append(r.descendants, d)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: relation descendants: %w", err)
	}
	// Columns of the named relations (descendants share the column names).
	rows, err = c.q.Query(ctx, columnsSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("querycache: relation columns: %w", err)
	}
	for rows.Next() {
		var rel, typ, elem, base, baseElem uint32
		var typlen, baseLen int16
		var name, typtype, basetype string
		var deterministic bool
		if err := rows.Scan(&rel, &name, &typ, &typtype, &elem, &typlen, &base, &basetype, &baseElem, &baseLen, &deterministic); err != nil {
			rows.Close()
			return nil, fmt.Errorf("querycache: relation columns: %w", err)
		}
		col := classifyColumn(typ, typtype, base, basetype, deterministic)
		col.t = newTypeFacts(typ, typtype, elem, typlen, base, basetype, baseElem, baseLen)
		col.t.regType, col.t.dateTime = col.regType, col.dateTime
		for _, r := range byOID[rel] {
			if r.columns == nil {
				r.columns = map[string]colInfo{}
			}
			r.columns[name] = col
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: relation columns: %w", err)
	}
	rows, err = c.q.Query(ctx, primaryKeysSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("querycache: primary keys: %w", err)
	}
	for rows.Next() {
		var rel uint32
		var cols []string
		if err := rows.Scan(&rel, &cols); err != nil {
			rows.Close()
			return nil, fmt.Errorf("querycache: primary keys: %w", err)
		}
		for _, r := range byOID[rel] {
			r.primaryKey = cols
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: primary keys: %w", err)
	}
	return out, nil
}

// classifyColumn decides a column's value class from its type (a domain counts as
// its base type, one level deep) and collation.
func classifyColumn(typ uint32, typtype string, base uint32, basetype string, deterministic bool) colInfo {
	t, tt := typ, typtype
	if typtype == "d" {
		t, tt = base, basetype
	}
	col := colInfo{typeOID: t, regType: regTypeOIDs[t], dateTime: dateTimeOIDs[t]}
	switch {
	case tt == "e":
		col.class = ClassEnum
	case tt == "b":
		col.class = ClassOf(t)
	}
	if col.class == ClassText && !deterministic {
		col.class = ClassNone
	}
	return col
}

// namespaceCond restricts a catalog's namespace column to the schema named in the
// query's row (n.schema), or to the session's search_path (pg_catalog included)
// when the name is unqualified.
const namespaceCond = `(CASE WHEN n.schema = '' THEN %[1]s IN (SELECT oid FROM pg_namespace WHERE nspname = ANY(current_schemas(true)))
      ELSE %[1]s = (SELECT oid FROM pg_namespace WHERE nspname = n.schema) END)`

// procColumns are the pg_proc columns scanProc reads, for a function p in namespace pns.
const procColumns = `p.oid, pns.nspname, p.proname, p.oid::regprocedure::text, p.proargtypes::oid[],
       p.pronargdefaults, p.provariadic, p.prorettype, p.provolatile::text`

var functionsSQL = `
SELECT n.i::int, coalesce(to_regtype(n.quoted)::oid, 0), p.oid IS NOT NULL, ` + procColumns + `
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS n(schema, name, quoted, i)
LEFT JOIN (pg_proc p JOIN pg_namespace pns ON pns.oid = p.pronamespace)
       ON p.proname = n.name AND ` + fmt.Sprintf(namespaceCond, "p.pronamespace") + `
ORDER BY n.i, p.oid
LIMIT 100000`

var operatorsSQL = `
SELECT n.i::int, o.oprleft, o.oprright, o.oprresult, ` + procColumns + `
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(schema, name, i)
JOIN pg_operator o ON o.oprname = n.name AND ` + fmt.Sprintf(namespaceCond, "o.oprnamespace") + `
JOIN pg_proc p ON p.oid = o.oprcode
JOIN pg_namespace pns ON pns.oid = p.pronamespace
ORDER BY n.i, o.oid
LIMIT 100000`

// typeColumns are the pg_type columns scanTypeFacts reads, for a type t.
const typeColumns = `t.oid, t.typtype::text, t.typelem, t.typlen, t.typbasetype,
       coalesce(bt.typtype::text, ''), coalesce(bt.typelem, 0), coalesce(bt.typlen, 0), t.typarray, format_type(t.oid, NULL),
       t.typcategory::text, t.typispreferred,
       ARRAY[t.oid, t.typbasetype, t.typelem, coalesce(e.typbasetype, 0), coalesce(r.rngsubtype, 0), coalesce(m.rngsubtype, 0)]::oid[]`

const typeJoins = `
LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
LEFT JOIN pg_type e ON e.oid = t.typelem
LEFT JOIN pg_range r ON r.rngtypid = t.oid
LEFT JOIN pg_range m ON m.rngmultitypid = t.oid`

const typesSQL = `
SELECT n.i::int, ` + typeColumns + `
FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i)
JOIN pg_type t ON t.oid = to_regtype(n.name)` + typeJoins

const typeFactsSQL = `
SELECT ` + typeColumns + `
FROM pg_type t` + typeJoins + `
WHERE t.oid = ANY($1::oid[])`

// maxCasts bounds the rows of pg_cast read (a fresh database has about 230).
const maxCasts = 20000

var castsSQL = `
SELECT c.castsource, c.casttarget, c.castcontext::text, c.castmethod::text, p.oid IS NOT NULL,
       coalesce(p.oid, 0), coalesce(pns.nspname, ''), coalesce(p.proname, ''), coalesce(p.oid::regprocedure::text, ''),
       coalesce(p.proargtypes::oid[], '{}'), coalesce(p.pronargdefaults, 0), coalesce(p.provariadic, 0),
       coalesce(p.prorettype, 0), coalesce(p.provolatile::text, 'i')
FROM pg_cast c
LEFT JOIN (pg_proc p JOIN pg_namespace pns ON pns.oid = p.pronamespace) ON p.oid = c.castfunc
LIMIT ` + fmt.Sprint(maxCasts+1)

func splitNames(names []qname) (schemas, plain []string) {
	schemas = make([]string, len(names))
	plain = make([]string, len(names))
	for i, n := range names {
		schemas[i], plain[i] = n.schema, n.name
	}
	return schemas, plain
}

// procFields are the scan targets of procColumns.
type procFields struct {
	p         procInfo
	vol       string
	ndefaults int16
	args      []uint32
}

func (f *procFields) targets() []any {
	return []any{&f.p.oid, &f.p.schema, &f.p.name, &f.p.signature, &f.args, &f.ndefaults, &f.p.variadic, &f.p.ret, &f.vol}
}

func (f *procFields) proc() *procInfo {
	p := f.p
	p.args = f.args
	p.ndefaults = int(f.ndefaults)
	p.volatility = f.vol[0]
	p.builtin = p.schema == "pg_catalog" && p.oid < firstNormalObjectID
	p.key = procKey(p.name, p.args)
	return &p
}

func (c pgCatalog) functions(ctx context.Context, names []qname) (map[qname]funcInfo, error) {
	schemas, plain := splitNames(names)
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = quotedName(n)
	}
	rows, err := c.q.Query(ctx, functionsSQL, schemas, plain, quoted)
	if err != nil {
		return nil, fmt.Errorf("querycache: function volatility: %w", err)
	}
	defer rows.Close()
	out := make(map[qname]funcInfo, len(names))
	for rows.Next() {
		var i int
		var asType uint32
		var found bool
		// A LEFT JOIN without a function leaves the proc columns NULL.
		var oid, variadic, ret *uint32
		var schema, name, signature, vol *string
		var args []uint32
		var ndefaults *int16
		if err := rows.Scan(&i, &asType, &found, &oid, &schema, &name, &signature, &args, &ndefaults, &variadic, &ret, &vol); err != nil {
			return nil, fmt.Errorf("querycache: function volatility: %w", err)
		}
		f := out[names[i-1]]
		f.asType = asType
		if found {
			pf := procFields{p: procInfo{oid: *oid, schema: *schema, name: *name, signature: *signature, variadic: *variadic, ret: *ret},
				vol: *vol, ndefaults: *ndefaults, args: args}
			f.overloads = append(f.overloads, pf.proc())
		}
		out[names[i-1]] = f
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: function volatility: %w", err)
	}
	return out, nil
}

func (c pgCatalog) operators(ctx context.Context, names []qname) (map[qname][]opOverload, error) {
	schemas, plain := splitNames(names)
	rows, err := c.q.Query(ctx, operatorsSQL, schemas, plain)
	if err != nil {
		return nil, fmt.Errorf("querycache: operator volatility: %w", err)
	}
	defer rows.Close()
	out := make(map[qname][]opOverload, len(names))
	for rows.Next() {
		var i int
		var o opOverload
		var pf procFields
		if err := rows.Scan(append([]any{&i, &o.left, &o.right, &o.result}, pf.targets()...)...); err != nil {
			return nil, fmt.Errorf("querycache: operator volatility: %w", err)
		}
		o.proc = pf.proc()
		out[names[i-1]] = append(out[names[i-1]], o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: operator volatility: %w", err)
	}
	return out, nil
}

// typeFields are the scan targets of typeColumns.
type typeFields struct {
	oid, elem, base, baseElem, array  uint32
	typlen, baseLen                   int16
	typtype, basetype, name, category string
	preferred                         bool
	related                           []uint32
}

func (f *typeFields) targets() []any {
	return []any{&f.oid, &f.typtype, &f.elem, &f.typlen, &f.base, &f.basetype, &f.baseElem, &f.baseLen, &f.array, &f.name,
		&f.category, &f.preferred, &f.related}
}

func (f *typeFields) facts() typeFacts {
	t := newTypeFacts(f.oid, f.typtype, f.elem, f.typlen, f.base, f.basetype, f.baseElem, f.baseLen)
	t.name = f.name
	t.category, t.preferred = f.category[0], f.preferred
	for _, o := range f.related {
		t.regType = t.regType || regTypeOIDs[o]
		t.dateTime = t.dateTime || dateTimeOIDs[o]
	}
	return t
}

// newTypeFacts builds the facts of a type from its pg_type row and its base type's.
func newTypeFacts(oid uint32, typtype string, elem uint32, typlen int16, base uint32, basetype string, baseElem uint32, baseLen int16) typeFacts {
	t := typeFacts{oid: oid, kind: typeKind(typtype, elem, typlen), elem: elem, base: oid}
	if t.kind == kindDomain {
		t.base, t.baseKind = base, typeKind(basetype, baseElem, baseLen)
		if t.baseKind == kindArray {
			t.elem = baseElem
		}
	} else {
		t.baseKind = t.kind
	}
	if t.kind != kindArray && t.baseKind != kindArray {
		t.elem = 0
	}
	return t
}

func typeKind(typtype string, elem uint32, typlen int16) byte {
	switch typtype {
	case "b":
		if elem != 0 && typlen == -1 {
			return kindArray
		}
		return kindBase
	case "e", "r", "m", "c", "p", "d":
		return typtype[0]
	}
	return kindUnknown
}

func (c pgCatalog) types(ctx context.Context, names []qname) (map[qname]typeInfo, error) {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = quotedName(n)
	}
	rows, err := c.q.Query(ctx, typesSQL, quoted)
	if err != nil {
		return nil, fmt.Errorf("querycache: types: %w", err)
	}
	defer rows.Close()
	out := make(map[qname]typeInfo, len(names))
	for rows.Next() {
		var i int
		var f typeFields
		if err := rows.Scan(append([]any{&i}, f.targets()...)...); err != nil {
			return nil, fmt.Errorf("querycache: types: %w", err)
		}
		t := typeInfo{found: true, facts: f.facts(), array: f.array}
		if f.typtype == "e" {
			t.class = ClassEnum
		} else {
			t.class = ClassOf(f.oid)
		}
		out[names[i-1]] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: types: %w", err)
	}
	return out, nil
}

func (c pgCatalog) typeFacts(ctx context.Context, oids []uint32) (map[uint32]typeFacts, error) {
	rows, err := c.q.Query(ctx, typeFactsSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("querycache: types: %w", err)
	}
	defer rows.Close()
	out := make(map[uint32]typeFacts, len(oids))
	for rows.Next() {
		var f typeFields
		if err := rows.Scan(f.targets()...); err != nil {
			return nil, fmt.Errorf("querycache: types: %w", err)
		}
		out[f.oid] = f.facts()
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: types: %w", err)
	}
	return out, nil
}

func (c pgCatalog) casts(ctx context.Context) (*castTable, error) {
	rows, err := c.q.Query(ctx, castsSQL)
	if err != nil {
		return nil, fmt.Errorf("querycache: casts: %w", err)
	}
	defer rows.Close()
	t := &castTable{casts: map[[2]uint32]castInfo{}, complete: true}
	for rows.Next() {
		var src, dst uint32
		var context, method string
		var hasFn bool
		var pf procFields
		if err := rows.Scan(append([]any{&src, &dst, &context, &method, &hasFn}, pf.targets()...)...); err != nil {
			return nil, fmt.Errorf("querycache: casts: %w", err)
		}
		if len(t.casts) == maxCasts {
			t.complete = false
			break
		}
		ci := castInfo{context: context[0], method: method[0]}
		if hasFn {
			ci.fn = pf.proc()
		}
		t.casts[[2]uint32{src, dst}] = ci
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: casts: %w", err)
	}
	t.derive()
	return t, nil
}

// derive computes the unsafe targets from the casts.
func (t *castTable) derive() {
	t.unsafeImplicit, t.unsafeInto = map[uint32]bool{}, map[uint32]bool{}
	t.unsafeImplicitFrom = map[uint32][]uint32{}
	for k, c := range t.casts {
		if c.fn == nil || procSafeAlone(c.fn) {
			continue
		}
		t.unsafeInto[k[1]] = true
		if c.context == 'i' {
			t.unsafeImplicit[k[1]] = true
			t.unsafeImplicitFrom[k[1]] = append(t.unsafeImplicitFrom[k[1]], k[0])
		}
	}
}

// catalogKey is what name resolution depends on: the same names can mean other
// objects on another server, in another database, for another role ("$user" in the
// search_path) or under another search_path.
type catalogKey struct {
	server, database, role, searchPath string
}

// catalogCache holds the catalog facts loaded for one catalogKey, each with its load
// time so they are refreshed after the TTL.
type catalogCache struct {
	mu    sync.Mutex
	used  time.Time
	rels  map[qname]cached[*relInfo]
	funcs map[qname]cached[funcInfo]
	ops   map[qname]cached[[]opOverload]
	types map[qname]cached[typeInfo]
	facts map[uint32]cached[typeFacts]
	casts cached[*castTable] // v nil until loaded
}

type cached[T any] struct {
	v      T
	loaded time.Time
}

func newCatalogCache() *catalogCache {
	c := &catalogCache{}
	c.reset()
	return c
}

func (c *catalogCache) reset() {
	c.rels = map[qname]cached[*relInfo]{}
	c.funcs = map[qname]cached[funcInfo]{}
	c.ops = map[qname]cached[[]opOverload]{}
	c.types = map[qname]cached[typeInfo]{}
	c.facts = map[uint32]cached[typeFacts]{}
	c.casts = cached[*castTable]{}
}

func (c *catalogCache) size() int {
	return len(c.rels) + len(c.funcs) + len(c.ops) + len(c.types) + len(c.facts)
}

// lookup returns the fresh cached facts for keys and loads the others with load,
// all at once. The cache's lock is not held while loading.
func lookup[K comparable, T any](ctx context.Context, c *catalogCache, m func(*catalogCache) map[K]cached[T], keys []K,
	ttl time.Duration, maxEntries int, load func(context.Context, []K) (map[K]T, error)) (map[K]T, error) {
	now := time.Now()
	out := make(map[K]T, len(keys))
	var missing []K
	c.mu.Lock()
	for _, k := range keys {
		if e, ok := m(c)[k]; ok && now.Sub(e.loaded) < ttl {
			out[k] = e.v
		} else if !slices.Contains(missing, k) {
			missing = append(missing, k)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	loaded, err := load(ctx, missing)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.size()+len(missing) > maxEntries {
		// Over the bound: start this identity's cache afresh rather than track
		// recency per name; the names in use are reloaded on demand.
		c.reset()
	}
	for _, k := range missing {
		v := loaded[k] // the zero value says "not found"
		m(c)[k] = cached[T]{v: v, loaded: now}
		out[k] = v
	}
	c.mu.Unlock()
	return out, nil
}

// castTable returns the identity's pg_cast, loading it when missing or stale.
func (c *catalogCache) castTable(ctx context.Context, ttl time.Duration, load func(context.Context) (*castTable, error)) (*castTable, error) {
	now := time.Now()
	c.mu.Lock()
	e := c.casts
	c.mu.Unlock()
	if e.v != nil && now.Sub(e.loaded) < ttl {
		return e.v, nil
	}
	t, err := load(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.casts = cached[*castTable]{v: t, loaded: now}
	c.mu.Unlock()
	return t, nil
}

// invalidate forgets the facts about the given relations (and every view, whose base
// relations are not tracked here), or everything when rels is empty.
func (c *catalogCache) invalidate(rels []Relation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(rels) == 0 {
		c.reset()
		return
	}
	for name, e := range c.rels {
		r := e.v
		if r == nil || !r.found || r.kind == 'v' || touches(r, rels) {
			delete(c.rels, name)
		}
	}
}

func touches(r *relInfo, rels []Relation) bool {
	for _, x := range rels {
		if r.rel == x {
			return true
		}
		for _, d := range r.descendants {
			if d.rel == x {
				return true
			}
		}
	}
	return false
}
