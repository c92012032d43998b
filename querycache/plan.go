package querycache

import (
	"database/sql/driver"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/zeebo/xxh3"
)

// Plan is the analyzer's verdict on one statement for one session identity: whether
// its results may be cached and, if so, what an entry depends on. Plans are shared
// between callers and must not be modified.
type Plan struct {
	// Cacheable is true when results may be cached; otherwise Reason says why not
	// and Detail names the culprit (a function, a relation, ...) when there is one.
	Cacheable bool
	Reason    Reason
	Detail    string

	// Fingerprint is pg_query's fingerprint of the statement: the same for texts
	// that differ only in literals, parameters, whitespace or comments. It groups
	// statements for statistics; keys use the exact text (see Plan.Key).
	Fingerprint uint64

	// Off and TTL are the statement's directives (/* pgcache:off */,
	// /* pgcache:ttl=30s */); TTL is 0 when the statement sets none.
	Off bool
	TTL time.Duration
	// DirectiveError describes a malformed directive (ignored), "" if none.
	DirectiveError string

	// Reads is the read set: every base relation the statement can read, sorted,
	// with what an entry depends on in each. Empty unless Cacheable (or
	// ReasonNotChecked, where it is the catalog-free guess).
	Reads []Read

	// CreatesTemp reports that the statement creates a temporary object. The
	// driver should then set Session.TempObjects for the rest of the session.
	CreatesTemp bool

	// Unchecked lists, for catalog-free plans (ReasonNotChecked), what could not
	// be checked without a catalog.
	Unchecked []string

	textHash xxh3.Uint128
	maxTags  int
	// textParams are the parameters (1-based) that must be text values: the
	// plan's verdict assumed the server types them as text (Plan.Key checks).
	textParams []int
	gen        uint64 // catalog generation the plan was resolved at
	expires    int64  // Unix nanoseconds: resolution is redone after this
}

// Read is one relation of the read set.
type Read struct {
	Relation Relation
	// Wide: an entry depends on every row of the relation (tag WideTag).
	Wide bool
	// Predicates: otherwise, an entry depends only on the rows matching one of
	// these, for the statement's arguments (row tags). A relation read several
	// times has one predicate per reading.
	Predicates []Predicate
}

// Predicate is an equality restriction on a set of columns: the rows whose columns
// equal one of the value tuples.
type Predicate struct {
	Columns []PredicateColumn // sorted by name
	Tuples  [][]ValueSource   // each aligned with Columns
}

// Column is a predicate column with its value class.
type PredicateColumn struct {
	Name  string
	Class ValueClass
}

// ValueKind says where a predicate value comes from.
type ValueKind uint8

const (
	ValueConst      ValueKind = iota // a literal of the statement (Value)
	ValueNull                        // IS NULL
	ValueParam                       // the statement's argument $Param
	ValueParamArray                  // every element of the array argument $Param (= ANY($n))
)

// ValueSource is one value of a predicate tuple.
type ValueSource struct {
	Kind  ValueKind
	Param int       // ValueParam, ValueParamArray: 1-based argument number
	Value Canonical // ValueConst
}

func (v ValueSource) String() string {
	switch v.Kind {
	case ValueNull:
		return "NULL"
	case ValueParam:
		return fmt.Sprintf("$%d", v.Param)
	case ValueParamArray:
		return fmt.Sprintf("ANY($%d)", v.Param)
	}
	return quoteLiteral(v.Value.String())
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Scheme is a column set of a relation that some entries' row tags are computed
// over. Package invalidate registers every plan's schemes and computes, for each
// changed row, the row tags of each scheme of its relation.
type Scheme struct {
	Relation Relation
	Columns  []PredicateColumn // sorted by name
}

// Schemes returns the column sets this plan's row tags use, per relation.
func (p *Plan) Schemes() []Scheme {
	var out []Scheme
	for _, r := range p.Reads {
		if r.Wide {
			continue
		}
		for _, pr := range r.Predicates {
			s := Scheme{Relation: r.Relation, Columns: pr.Columns}
			if !slices.ContainsFunc(out, func(x Scheme) bool { return x.Relation == s.Relation && slices.Equal(x.Columns, s.Columns) }) {
				out = append(out, s)
			}
		}
	}
	return out
}

// ColumnNames returns the scheme's column names, in order.
func (s Scheme) ColumnNames() []string {
	names := make([]string, len(s.Columns))
	for i, c := range s.Columns {
		names[i] = c.Name
	}
	return names
}

// Tags returns the tags an entry of this plan carries for the given arguments (as
// database/sql passes them to the driver, in order): for every relation its AllTag,
// and either its WideTag or the row tags of its predicates with the SchemeTag of
// each predicate's columns. When an argument cannot
// be canonicalized for its column, or an array argument gives more tuples than the
// bound, that relation falls back to its WideTag: never a guess.
func (p *Plan) Tags(args []driver.NamedValue) []Tag {
	var tags []Tag
	for _, r := range p.Reads {
		tags = append(tags, AllTag(r.Relation))
		if r.Wide {
			tags = append(tags, WideTag(r.Relation))
			continue
		}
		start := len(tags)
		ok := true
		for _, pr := range r.Predicates {
			if tags, ok = p.appendRowTags(tags, r.Relation, pr, args); !ok {
				break
			}
		}
		if !ok || len(tags)-start > p.maxTags {
			tags = append(tags[:start], WideTag(r.Relation))
		}
	}
	return tags
}

func (p *Plan) appendRowTags(tags []Tag, rel Relation, pr Predicate, args []driver.NamedValue) ([]Tag, bool) {
	names := make([]string, len(pr.Columns))
	for i, c := range pr.Columns {
		names[i] = c.Name
	}
	if st := SchemeTag(rel, names); !slices.Contains(tags, st) {
		tags = append(tags, st)
	}
	for _, tuple := range pr.Tuples {
		// Each column's values: one, or several for an array argument.
		choices := make([][]Canonical, len(tuple))
		total := 1
		for i, src := range tuple {
			vals, ok := sourceValues(src, pr.Columns[i].Class, args, p.maxTags)
			if !ok {
				return tags, false
			}
			choices[i] = vals
			total *= len(vals)
			if total > p.maxTags {
				return tags, false
			}
		}
		if total == 0 {
			// An empty array matches no row: nothing of this relation is read
			// through this tuple.
			continue
		}
		idx := make([]int, len(tuple))
		vals := make([]Canonical, len(tuple))
		for {
			for i := range tuple {
				vals[i] = choices[i][idx[i]]
			}
			tags = append(tags, RowTag(rel, names, vals))
			i := len(idx) - 1
			for ; i >= 0; i-- {
				idx[i]++
				if idx[i] < len(choices[i]) {
					break
				}
				idx[i] = 0
			}
			if i < 0 {
				break
			}
		}
	}
	return tags, true
}

func sourceValues(src ValueSource, class ValueClass, args []driver.NamedValue, max int) ([]Canonical, bool) {
	switch src.Kind {
	case ValueConst:
		return []Canonical{src.Value}, true
	case ValueNull:
		return []Canonical{NullCanonical}, true
	case ValueParam:
		if src.Param < 1 || src.Param > len(args) {
			return nil, false
		}
		c, ok := CanonicalArg(class, args[src.Param-1].Value)
		return []Canonical{c}, ok
	case ValueParamArray:
		if src.Param < 1 || src.Param > len(args) {
			return nil, false
		}
		return canonicalArray(class, args[src.Param-1].Value, max)
	}
	return nil, false
}

// canonicalArray canonicalizes the elements of a Go slice or array argument (pgx
// sends those as PostgreSQL arrays). Anything else, including array values in text
// form, is not canonicalized.
func canonicalArray(class ValueClass, v any, max int) ([]Canonical, bool) {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && !rv.IsNil() {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
		return nil, false
	}
	if rv.Type().Elem().Kind() == reflect.Uint8 {
		return nil, false // []byte is bytea, [16]byte a UUID: not arrays to pgx
	}
	if rv.Len() > max {
		return nil, false
	}
	out := make([]Canonical, 0, rv.Len())
	for i := 0; i < rv.Len(); i++ {
		c, ok := CanonicalArg(class, rv.Index(i).Interface())
		if !ok {
			return nil, false
		}
		out = append(out, c)
	}
	return out, true
}

// Explain describes the plan in words, one fact per line, for pgcache explain.
func (p *Plan) Explain() string {
	var b strings.Builder
	switch {
	case p.Cacheable:
		b.WriteString("cacheable\n")
	case p.Reason == ReasonNotChecked:
		b.WriteString("no structural reason against caching; catalog not checked\n")
	default:
		fmt.Fprintf(&b, "not cacheable: %s (%s)", p.Reason.Description(), p.Reason)
		if p.Detail != "" {
			fmt.Fprintf(&b, ": %s", p.Detail)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "fingerprint: %016x\n", p.Fingerprint)
	if p.Off {
		b.WriteString("directive: off\n")
	}
	if p.TTL > 0 {
		fmt.Fprintf(&b, "directive: ttl=%s\n", p.TTL)
	}
	if p.DirectiveError != "" {
		fmt.Fprintf(&b, "directive ignored: %s\n", p.DirectiveError)
	}
	if p.CreatesTemp {
		b.WriteString("creates a temporary object: later statements of the session are not cached\n")
	}
	for _, r := range p.Reads {
		b.WriteString(r.String())
		b.WriteByte('\n')
		if r.Wide {
			fmt.Fprintf(&b, "  tags: %s %s\n", AllTag(r.Relation), WideTag(r.Relation))
			continue
		}
		fmt.Fprintf(&b, "  tags: %s", AllTag(r.Relation))
		for _, pr := range r.Predicates {
			fmt.Fprintf(&b, " %s", SchemeTag(r.Relation, columnNames(pr.Columns)))
		}
		b.WriteString(", and per argument values:")
		for _, pr := range r.Predicates {
			fmt.Fprintf(&b, " %s#(%s)=...", r.Relation, strings.Join(quoteAll(columnNames(pr.Columns)), ","))
		}
		b.WriteByte('\n')
	}
	for _, n := range p.textParams {
		fmt.Fprintf(&b, "argument $%d: cached only for text values\n", n)
	}
	for _, u := range p.Unchecked {
		fmt.Fprintf(&b, "not checked: %s\n", u)
	}
	return b.String()
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = quoteIdent(n)
	}
	return out
}

func columnNames(cols []PredicateColumn) []string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.Name
	}
	return names
}

// String describes a read compactly: `read "public"."users" where (id)=($1)` or
// `read "public"."log" wide`. The corpus tests compare these lines.
func (r Read) String() string {
	if r.Wide {
		return "read " + r.Relation.String() + " wide"
	}
	var parts []string
	for _, pr := range r.Predicates {
		var tuples []string
		for _, t := range pr.Tuples {
			vals := make([]string, len(t))
			for i, v := range t {
				vals[i] = v.String()
			}
			tuples = append(tuples, "("+strings.Join(vals, ",")+")")
		}
		parts = append(parts, "("+strings.Join(columnNames(pr.Columns), ",")+")="+strings.Join(tuples, "|"))
	}
	return "read " + r.Relation.String() + " where " + strings.Join(parts, " or ")
}

// Summary is the plan in a few lines without the fingerprint: the verdict, then one
// line per read. The corpus tests compare it.
func (p *Plan) Summary() string {
	var b strings.Builder
	switch {
	case p.Cacheable:
		b.WriteString("cacheable")
		for i, n := range p.textParams {
			if i == 0 {
				b.WriteString(" for text")
			}
			fmt.Fprintf(&b, " $%d", n)
		}
	case p.Reason == ReasonNotChecked:
		b.WriteString("unchecked")
	default:
		b.WriteString("no: " + p.Reason.String())
		if p.Detail != "" {
			b.WriteString(" (" + p.Detail + ")")
		}
	}
	if p.TTL > 0 {
		fmt.Fprintf(&b, " ttl=%s", p.TTL)
	}
	for _, r := range p.Reads {
		b.WriteString("\n")
		b.WriteString(r.String())
	}
	return b.String()
}
