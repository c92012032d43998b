package querycache

import (
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/zeebo/xxh3"
)

// LSN is a PostgreSQL write-ahead log position. Invalidations carry the commit LSN of
// the transaction that caused them, and the watermark is the highest commit LSN whose
// invalidations are fully applied. It is pglogrepl.LSN's representation, without the
// dependency.
type LSN uint64

// Tag names a set of rows of one relation that cached results depend on. A cached
// entry lists the tags it depends on; a committed change invalidates tags; an entry
// is valid only while none of its tags was invalidated after the entry's stamp.
//
// Tags are opaque to the stores: only their equality matters. The analyzer builds
// them from a query's predicates and arguments, package invalidate from the old and
// new values of changed rows, with the same constructors so both sides agree.
type Tag string

// Relation names a table by schema and name, as PostgreSQL's catalog and pgoutput's
// Relation messages spell them (unquoted, case as stored).
type Relation struct {
	Schema string
	Name   string
}

// String returns the relation as a quoted, schema-qualified SQL name, "public"."users".
// It is unambiguous whatever characters the names hold, and is the prefix of every tag
// of the relation.
func (r Relation) String() string {
	if r.Schema == "" {
		return quoteIdent(r.Name) // only in catalog-free plans, where the schema is unknown
	}
	return quoteIdent(r.Schema) + "." + quoteIdent(r.Name)
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// AllTag is carried by every entry that reads r. It is invalidated by TRUNCATE and by
// schema changes of r, which must drop every entry of r whatever its predicates.
func AllTag(r Relation) Tag { return Tag(r.String() + "#all") }

// WideTag is carried by the entries of r that have no usable predicate on r (r:*).
// Every committed change of a row of r invalidates it.
func WideTag(r Relation) Tag { return Tag(r.String() + "#*") }

// SchemeTag is carried by every entry of r with row tags over the columns
// (sorted by name, as in a Scheme). A change whose values for the columns are not
// all known (an UPDATE under the default replica identity does not send old
// values) invalidates it: every entry of that scheme goes, whatever its values,
// while entries of r's other schemes stay precise.
func SchemeTag(r Relation, columns []string) Tag {
	var b strings.Builder
	writeScheme(&b, r, columns)
	return Tag(b.String())
}

// writeScheme writes the part that a scheme's tags share: `"s"."r"#("a","b")`.
func writeScheme(b *strings.Builder, r Relation, columns []string) {
	b.WriteString(r.String())
	b.WriteString("#(")
	for i, c := range columns {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(quoteIdent(c))
	}
	b.WriteByte(')')
}

// maxRowTagLen bounds the length of a row tag: longer ones keep their relation and
// columns but hash their values (128-bit xxh3), so a large text or bytea value never
// makes a large tag. Both sides hash the same way, so they still agree.
const maxRowTagLen = 160

// RowTag is the tag of the rows of r whose columns (sorted by name, as in a Scheme)
// hold values (canonical, in the same order). A change of a row invalidates the row
// tags computed from its old and its new values for every scheme of r.
// len(values) must equal len(columns).
func RowTag(r Relation, columns []string, values []Canonical) Tag {
	var b strings.Builder
	writeScheme(&b, r, columns)
	b.WriteByte('=')
	head := b.Len()
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(string(v))
	}
	s := b.String()
	if len(s) <= maxRowTagLen {
		return Tag(s)
	}
	sum := xxh3.HashString128(s[head:]).Bytes()
	return Tag(s[:head] + "h:" + hex.EncodeToString(sum[:]))
}

// IsRowTagOf reports whether t is one of r's row or scheme tags (not its all or
// wide tag).
func IsRowTagOf(t Tag, r Relation) bool {
	prefix := r.String() + "#("
	return len(t) > len(prefix) && string(t[:len(prefix)]) == prefix
}
