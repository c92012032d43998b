package querycache

import (
	"context"
	"fmt"
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
	typeOID  uint32 // the base type for domains
	class    ValueClass
	regType  bool // a reg* type: its text form depends on the catalog
	dateTime bool // date, time, timestamp, interval and their tz variants
}

type funcInfo struct {
	overloads    int
	allImmutable bool
}

type opOverload struct {
	left, right, result uint32
	volatility          byte
	proc                string
	schema              string
}

type typeInfo struct {
	found    bool
	oid      uint32
	regType  bool
	dateTime bool
	class    ValueClass
}

// catalogSource loads catalog facts for names. The real one queries PostgreSQL
// through a Querier; tests and the fuzz target use an in-memory one.
type catalogSource interface {
	relations(ctx context.Context, names []qname) (map[qname]*relInfo, error)
	functions(ctx context.Context, names []qname) (map[qname]funcInfo, error)
	operators(ctx context.Context, names []qname) (map[qname][]opOverload, error)
	types(ctx context.Context, names []qname) (map[qname]typeInfo, error)
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
       CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) ELSE '' END
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
SELECT a.attrelid, a.attname, a.atttypid, t.typtype::text, t.typbasetype, coalesce(bt.typtype::text, ''),
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
		if err := rows.Scan(&i, &r.oid, &r.rel.Schema, &r.rel.Name, &kind, &persistence, &r.rowSecurity, &r.viewDef); err != nil {
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
		var rel, typ, base uint32
		var name, typtype, basetype string
		var deterministic bool
		if err := rows.Scan(&rel, &name, &typ, &typtype, &base, &basetype, &deterministic); err != nil {
			rows.Close()
			return nil, fmt.Errorf("querycache: relation columns: %w", err)
		}
		col := classifyColumn(typ, typtype, base, basetype, deterministic)
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

var functionsSQL = `
SELECT n.i::int, count(p.oid)::int, coalesce(bool_and(p.provolatile = 'i'), false)
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(schema, name, i)
LEFT JOIN pg_proc p ON p.proname = n.name AND ` + fmt.Sprintf(namespaceCond, "p.pronamespace") + `
GROUP BY n.i`

var operatorsSQL = `
SELECT n.i::int, o.oprleft, o.oprright, o.oprresult, p.provolatile::text, p.proname, ns.nspname
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(schema, name, i)
JOIN pg_operator o ON o.oprname = n.name AND ` + fmt.Sprintf(namespaceCond, "o.oprnamespace") + `
JOIN pg_proc p ON p.oid = o.oprcode
JOIN pg_namespace ns ON ns.oid = o.oprnamespace`

const typesSQL = `
SELECT n.i::int, t.oid, t.typtype::text,
       ARRAY[t.oid, t.typbasetype, t.typelem, coalesce(e.typbasetype, 0), coalesce(r.rngsubtype, 0), coalesce(m.rngsubtype, 0)]::oid[]
FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i)
JOIN pg_type t ON t.oid = to_regtype(n.name)
LEFT JOIN pg_type e ON e.oid = t.typelem
LEFT JOIN pg_range r ON r.rngtypid = t.oid
LEFT JOIN pg_range m ON m.rngmultitypid = t.oid`

func splitNames(names []qname) (schemas, plain []string) {
	schemas = make([]string, len(names))
	plain = make([]string, len(names))
	for i, n := range names {
		schemas[i], plain[i] = n.schema, n.name
	}
	return schemas, plain
}

func (c pgCatalog) functions(ctx context.Context, names []qname) (map[qname]funcInfo, error) {
	schemas, plain := splitNames(names)
	rows, err := c.q.Query(ctx, functionsSQL, schemas, plain)
	if err != nil {
		return nil, fmt.Errorf("querycache: function volatility: %w", err)
	}
	defer rows.Close()
	out := make(map[qname]funcInfo, len(names))
	for rows.Next() {
		var i int
		var f funcInfo
		if err := rows.Scan(&i, &f.overloads, &f.allImmutable); err != nil {
			return nil, fmt.Errorf("querycache: function volatility: %w", err)
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
		var vol string
		if err := rows.Scan(&i, &o.left, &o.right, &o.result, &vol, &o.proc, &o.schema); err != nil {
			return nil, fmt.Errorf("querycache: operator volatility: %w", err)
		}
		o.volatility = vol[0]
		out[names[i-1]] = append(out[names[i-1]], o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: operator volatility: %w", err)
	}
	return out, nil
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
		var t typeInfo
		var typtype string
		var related []uint32
		if err := rows.Scan(&i, &t.oid, &typtype, &related); err != nil {
			return nil, fmt.Errorf("querycache: types: %w", err)
		}
		t.found = true
		for _, o := range related {
			t.regType = t.regType || regTypeOIDs[o]
			t.dateTime = t.dateTime || dateTimeOIDs[o]
		}
		if typtype == "e" {
			t.class = ClassEnum
		} else {
			t.class = ClassOf(t.oid)
		}
		out[names[i-1]] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querycache: types: %w", err)
	}
	return out, nil
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
}

type cached[T any] struct {
	v      T
	loaded time.Time
}

func newCatalogCache() *catalogCache {
	return &catalogCache{
		rels:  map[qname]cached[*relInfo]{},
		funcs: map[qname]cached[funcInfo]{},
		ops:   map[qname]cached[[]opOverload]{},
		types: map[qname]cached[typeInfo]{},
	}
}

func (c *catalogCache) size() int { return len(c.rels) + len(c.funcs) + len(c.ops) + len(c.types) }

// lookup returns the fresh cached facts for names and loads the others with load,
// all at once. The cache's lock is not held while loading.
func lookup[T any](ctx context.Context, c *catalogCache, m func(*catalogCache) map[qname]cached[T], names []qname,
	ttl time.Duration, maxEntries int, load func(context.Context, []qname) (map[qname]T, error)) (map[qname]T, error) {
	now := time.Now()
	out := make(map[qname]T, len(names))
	var missing []qname
	c.mu.Lock()
	for _, n := range names {
		if e, ok := m(c)[n]; ok && now.Sub(e.loaded) < ttl {
			out[n] = e.v
		} else if !containsName(missing, n) {
			missing = append(missing, n)
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
		c.rels = map[qname]cached[*relInfo]{}
		c.funcs = map[qname]cached[funcInfo]{}
		c.ops = map[qname]cached[[]opOverload]{}
		c.types = map[qname]cached[typeInfo]{}
	}
	for _, n := range missing {
		v := loaded[n] // the zero value says "not found"
		m(c)[n] = cached[T]{v: v, loaded: now}
		out[n] = v
	}
	c.mu.Unlock()
	return out, nil
}

func containsName(names []qname, n qname) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

// invalidate forgets the facts about the given relations (and every view, whose base
// relations are not tracked here), or everything when rels is empty.
func (c *catalogCache) invalidate(rels []Relation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(rels) == 0 {
		c.rels = map[qname]cached[*relInfo]{}
		c.funcs = map[qname]cached[funcInfo]{}
		c.ops = map[qname]cached[[]opOverload]{}
		c.types = map[qname]cached[typeInfo]{}
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
