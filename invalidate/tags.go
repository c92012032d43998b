package invalidate

import (
	"slices"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/querycache"
)

// DefaultMaxTagsPerRelation bounds the row tags one transaction invalidates in one
// relation; past it the transaction invalidates all of the relation's entries
// instead (its "all" tag), which is what the individual tags would have done anyway,
// only less precisely.
const DefaultMaxTagsPerRelation = 10000

// tagger computes the tags a committed transaction invalidates.
type tagger struct {
	schemes        SchemeSource
	maxTagsPerRel  int
	onSchemaChange func(rels ...querycache.Relation) // may be nil
}

// relTags collects the tags of one relation within a transaction.
type relTags struct {
	all  bool // invalidate every entry of the relation
	tags map[querycache.Tag]struct{}
}

// DDLMessagePrefix is the prefix of the logical decoding message that pgcache's
// event trigger (pgcache setup) emits in every transaction that changes the schema:
// the cache is then flushed, since results may change shape without a row change.
const DDLMessagePrefix = "pgcache.ddl"

// DDLTriggerSQL installs the event triggers that make every schema change announce
// itself in the change stream, in its transaction's order, so caches flush: a result
// can change shape (ALTER TABLE ... ADD COLUMN ... DEFAULT) without any row change.
// It needs a superuser; `pgcache setup` runs it.
const DDLTriggerSQL = `
CREATE OR REPLACE FUNCTION pgcache_announce_ddl() RETURNS event_trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_logical_emit_message(true, '` + DDLMessagePrefix + `', tg_tag);
END $$;
DROP EVENT TRIGGER IF EXISTS pgcache_ddl;
CREATE EVENT TRIGGER pgcache_ddl ON ddl_command_end EXECUTE FUNCTION pgcache_announce_ddl();
DROP EVENT TRIGGER IF EXISTS pgcache_drop;
CREATE EVENT TRIGGER pgcache_drop ON sql_drop EXECUTE FUNCTION pgcache_announce_ddl();`

// tags returns the tags tx invalidates, without duplicates, and whether it changed
// the schema (its DDL message): then everything must go.
func (t *tagger) tags(tx *cdc.Transaction) (tags []querycache.Tag, ddl bool) {
	byRel := make(map[querycache.Relation]*relTags)
	get := func(r *cdc.Relation) (querycache.Relation, *relTags) {
		rel := querycache.Relation{Schema: r.Schema, Name: r.Name}
		rt := byRel[rel]
		if rt == nil {
			rt = &relTags{tags: make(map[querycache.Tag]struct{})}
			byRel[rel] = rt
		}
		return rel, rt
	}
	for _, ev := range tx.Events {
		switch ev := ev.(type) {
		case *cdc.RowChange:
			rel, rt := get(ev.Relation)
			if rt.all {
				continue
			}
			rt.tags[querycache.WideTag(rel)] = struct{}{}
			for _, s := range t.schemes.Of(rel) {
				if !t.rowTags(rt, rel, s, ev) {
					// Never guess: every entry of the scheme goes.
					rt.tags[querycache.SchemeTag(rel, s.ColumnNames())] = struct{}{}
				}
			}
			if len(rt.tags) > t.maxTagsPerRel {
				rt.all = true
			}
		case *cdc.Truncate:
			for _, r := range ev.Relations {
				_, rt := get(r)
				rt.all = true
			}
		case *cdc.Overflow:
			_, rt := get(ev.Relation)
			rt.all = true
		case *cdc.Message:
			if ev.Prefix == DDLMessagePrefix {
				ddl = true
			}
		case *cdc.RelationChange:
			var changed []querycache.Relation
			for _, r := range []*cdc.Relation{ev.Previous, ev.Current} {
				if r == nil {
					continue
				}
				rel, rt := get(r)
				rt.all = true
				changed = append(changed, rel)
			}
			if t.onSchemaChange != nil {
				t.onSchemaChange(changed...)
			}
		}
	}
	for rel, rt := range byRel {
		if rt.all {
			tags = append(tags, querycache.AllTag(rel), querycache.WideTag(rel))
			continue
		}
		for tag := range rt.tags {
			tags = append(tags, tag)
		}
	}
	slices.Sort(tags) // deterministic batches: easier to read, test and compare
	if ddl && t.onSchemaChange != nil {
		t.onSchemaChange()
	}
	return tags, ddl
}

// rowTags adds the row tags of scheme s for the old and new values of a row change.
// It reports false when a value the scheme needs is unknown (an old value PostgreSQL
// did not send, a column that no longer exists, text that does not parse): the
// change may then have moved any row of the scheme, and only invalidating every
// entry of the scheme (its SchemeTag) is safe.
func (t *tagger) rowTags(rt *relTags, rel querycache.Relation, s querycache.Scheme, ch *cdc.RowChange) bool {
	cols := ch.Relation.Columns
	idx := make([]int, len(s.Columns))
	for i, c := range s.Columns {
		idx[i] = slices.IndexFunc(cols, func(col cdc.Column) bool { return col.Name == c.Name })
		if idx[i] < 0 {
			return false
		}
	}
	names := s.ColumnNames()
	values := make([]querycache.Canonical, len(s.Columns))

	newRow := func() bool {
		for i, c := range s.Columns {
			v := ch.New[idx[i]]
			if v.Kind == cdc.ValueUnchanged {
				// An unchanged TOASTed value equals the old one.
				if ch.Old == nil || ch.Old[idx[i]].Kind == cdc.ValueAbsent || ch.Old[idx[i]].Kind == cdc.ValueUnchanged {
					return false
				}
				v = ch.Old[idx[i]]
			}
			cv, ok := canonical(c.Class, v)
			if !ok {
				return false
			}
			values[i] = cv
		}
		rt.tags[querycache.RowTag(rel, names, values)] = struct{}{}
		return true
	}
	oldRow := func() bool {
		for i, c := range s.Columns {
			var v cdc.Value
			switch {
			case ch.Old != nil:
				v = ch.Old[idx[i]]
			case ch.Op == cdc.OpUpdate && cols[idx[i]].Key && ch.New != nil:
				// No old tuple: the replica identity key did not change, so a key
				// column's old value is its new value. Other columns' old values
				// are unknown.
				v = ch.New[idx[i]]
			default:
				return false
			}
			cv, ok := canonical(c.Class, v)
			if !ok {
				return false
			}
			values[i] = cv
		}
		rt.tags[querycache.RowTag(rel, names, values)] = struct{}{}
		return true
	}

	switch ch.Op {
	case cdc.OpInsert:
		return newRow()
	case cdc.OpDelete:
		return oldRow()
	case cdc.OpUpdate:
		return oldRow() && newRow()
	}
	return false
}

// canonical converts a pgoutput value to its canonical form for a value class.
func canonical(class querycache.ValueClass, v cdc.Value) (querycache.Canonical, bool) {
	switch v.Kind {
	case cdc.ValueNull:
		return querycache.NullCanonical, true
	case cdc.ValueText:
		return querycache.CanonicalText(class, v.Text)
	}
	return "", false // absent or unchanged: unknown
}
