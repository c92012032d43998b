package invalidate

import (
	"slices"
	"testing"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/querycache"
)

var (
	usersRel = &cdc.Relation{OID: 16384, Schema: "public", Name: "users", ReplicaIdentity: cdc.ReplicaIdentityDefault,
		Columns: []cdc.Column{
			{Name: "id", TypeOID: 20, Key: true},
			{Name: "org_id", TypeOID: 20},
			{Name: "email", TypeOID: 25},
		}}
	users    = querycache.Relation{Schema: "public", Name: "users"}
	byID     = querycache.Scheme{Relation: users, Columns: []querycache.PredicateColumn{{Name: "id", Class: querycache.ClassInt}}}
	byOrg    = querycache.Scheme{Relation: users, Columns: []querycache.PredicateColumn{{Name: "org_id", Class: querycache.ClassInt}}}
	allUsers = []querycache.Tag{querycache.AllTag(users), querycache.WideTag(users)}
)

func text(s string) cdc.Value { return cdc.Value{Kind: cdc.ValueText, Text: s} }

var (
	null      = cdc.Value{Kind: cdc.ValueNull}
	absent    = cdc.Value{Kind: cdc.ValueAbsent}
	unchanged = cdc.Value{Kind: cdc.ValueUnchanged}
)

func rowTag(s querycache.Scheme, values ...string) querycache.Tag {
	cv := make([]querycache.Canonical, len(values))
	for i, v := range values {
		if v == "NULL" {
			cv[i] = querycache.NullCanonical
			continue
		}
		c, ok := querycache.CanonicalText(s.Columns[i].Class, v)
		if !ok {
			panic(v)
		}
		cv[i] = c
	}
	return querycache.RowTag(s.Relation, s.ColumnNames(), cv)
}

func schemeTag(s querycache.Scheme) querycache.Tag {
	return querycache.SchemeTag(s.Relation, s.ColumnNames())
}

var byGone = querycache.Scheme{Relation: users, Columns: []querycache.PredicateColumn{{Name: "gone", Class: querycache.ClassInt}}}

func sorted(tags ...querycache.Tag) []querycache.Tag {
	slices.Sort(tags)
	return tags
}

func TestTags(t *testing.T) {
	wide := querycache.WideTag(users)
	tests := []struct {
		name    string
		schemes []querycache.Scheme
		events  []cdc.Event
		want    []querycache.Tag
		ddl     bool
	}{
		{"insert, no schemes", nil,
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpInsert, New: []cdc.Value{text("1"), text("7"), text("a@x")}}},
			[]querycache.Tag{wide}, false},
		{"insert", []querycache.Scheme{byID, byOrg},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpInsert, New: []cdc.Value{text("1"), text("7"), text("a@x")}}},
			sorted(wide, rowTag(byID, "1"), rowTag(byOrg, "7")), false},
		{"insert with NULL", []querycache.Scheme{byOrg},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpInsert, New: []cdc.Value{text("1"), null, text("a@x")}}},
			sorted(wide, rowTag(byOrg, "NULL")), false},
		{"update keeping the key, default identity: key scheme is precise", []querycache.Scheme{byID},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpUpdate, New: []cdc.Value{text("43"), text("7"), text("b@x")}}},
			sorted(wide, rowTag(byID, "43")), false},
		{"update, default identity: old org unknown, the org scheme goes, the key scheme stays precise", []querycache.Scheme{byID, byOrg},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpUpdate, New: []cdc.Value{text("43"), text("2"), text("b@x")}}},
			sorted(wide, rowTag(byID, "43"), schemeTag(byOrg)), false},
		{"update moving org, full identity", []querycache.Scheme{byOrg},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpUpdate, OldKind: cdc.OldFull,
				Old: []cdc.Value{text("43"), text("1"), text("b@x")}, New: []cdc.Value{text("43"), text("2"), text("b@x")}}},
			sorted(wide, rowTag(byOrg, "1"), rowTag(byOrg, "2")), false},
		{"update changing the key: old key sent", []querycache.Scheme{byID},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpUpdate, OldKind: cdc.OldKey,
				Old: []cdc.Value{text("43"), absent, absent}, New: []cdc.Value{text("44"), text("1"), text("b@x")}}},
			sorted(wide, rowTag(byID, "43"), rowTag(byID, "44")), false},
		{"delete, key only: key scheme precise", []querycache.Scheme{byID},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpDelete, OldKind: cdc.OldKey, Old: []cdc.Value{text("9"), absent, absent}}},
			sorted(wide, rowTag(byID, "9")), false},
		{"delete, key only: non-key scheme unknown", []querycache.Scheme{byOrg},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpDelete, OldKind: cdc.OldKey, Old: []cdc.Value{text("9"), absent, absent}}},
			sorted(wide, schemeTag(byOrg)), false},
		{"unchanged TOAST value takes the old one", []querycache.Scheme{byOrg},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpUpdate, OldKind: cdc.OldFull,
				Old: []cdc.Value{text("1"), text("5"), text("a")}, New: []cdc.Value{text("1"), unchanged, text("b")}}},
			sorted(wide, rowTag(byOrg, "5")), false},
		{"unchanged TOAST value without an old row: unknown", []querycache.Scheme{byOrg},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpUpdate, New: []cdc.Value{text("1"), unchanged, text("b")}}},
			sorted(wide, schemeTag(byOrg)), false},
		{"text that does not parse for the class: unknown", []querycache.Scheme{byOrg},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpInsert, New: []cdc.Value{text("1"), text("seven"), text("a")}}},
			sorted(wide, schemeTag(byOrg)), false},
		{"a scheme column that no longer exists: unknown", []querycache.Scheme{byGone},
			[]cdc.Event{&cdc.RowChange{Relation: usersRel, Op: cdc.OpInsert, New: []cdc.Value{text("1"), text("2"), text("a")}}},
			sorted(wide, schemeTag(byGone)), false},
		{"truncate", []querycache.Scheme{byID},
			[]cdc.Event{&cdc.Truncate{Relations: []*cdc.Relation{usersRel}}},
			sorted(allUsers...), false},
		{"overflow", []querycache.Scheme{byID},
			[]cdc.Event{&cdc.Overflow{Relation: usersRel, Changes: 10}},
			sorted(allUsers...), false},
		{"relation change", nil,
			[]cdc.Event{&cdc.RelationChange{Previous: usersRel, Current: usersRel}},
			sorted(allUsers...), false},
		{"DDL message flushes", nil,
			[]cdc.Event{&cdc.Message{Prefix: DDLMessagePrefix}},
			nil, true},
		{"another prefix is ignored", nil,
			[]cdc.Event{&cdc.Message{Prefix: "app"}},
			nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := NewSchemes(0, 0)
			for _, s := range tt.schemes {
				reg.Register(s)
			}
			var changed int
			tg := tagger{schemes: reg, maxTagsPerRel: 100, onSchemaChange: func(...querycache.Relation) { changed++ }}
			got, ddl := tg.tags(&cdc.Transaction{Events: tt.events})
			if !slices.Equal(got, tt.want) || ddl != tt.ddl {
				t.Errorf("tags = %q, ddl %v\nwant   %q, ddl %v", got, ddl, tt.want, tt.ddl)
			}
		})
	}
}

func TestTagsBoundPerRelation(t *testing.T) {
	reg := NewSchemes(0, 0)
	reg.Register(byID)
	tg := tagger{schemes: reg, maxTagsPerRel: 10}
	var events []cdc.Event
	for i := range 20 {
		events = append(events, &cdc.RowChange{Relation: usersRel, Op: cdc.OpInsert,
			New: []cdc.Value{text(string(rune('0' + i%10))), text("1"), text("a")}})
	}
	events[19].(*cdc.RowChange).New[0] = text("99")
	got, _ := tg.tags(&cdc.Transaction{Events: events})
	if !slices.Equal(got, sorted(allUsers...)) {
		t.Errorf("over the bound: %q", got)
	}
}

func TestSchemesBounds(t *testing.T) {
	r := NewSchemes(1, 1)
	if !r.Register(byID) || !r.Register(byID) {
		t.Fatal("registering a scheme (again) failed")
	}
	if r.Register(byOrg) {
		t.Error("a second scheme of the relation was accepted past the bound of 1")
	}
	other := querycache.Scheme{Relation: querycache.Relation{Schema: "public", Name: "orgs"}, Columns: byID.Columns}
	if r.Register(other) {
		t.Error("a second relation was accepted past the bound of 1")
	}
	if got := r.Of(users); len(got) != 1 {
		t.Errorf("Of = %v", got)
	}
}

func TestSharedSchemeEncoding(t *testing.T) {
	s := querycache.Scheme{Relation: querycache.Relation{Schema: `we"ird`, Name: "t,x"},
		Columns: []querycache.PredicateColumn{{Name: "a", Class: querycache.ClassText}, {Name: "b", Class: querycache.ClassUUID}}}
	got, ok := decodeScheme(encodeScheme(s))
	if !ok || got.Relation != s.Relation || !slices.Equal(got.Columns, s.Columns) {
		t.Fatalf("round trip: %+v, %v", got, ok)
	}
	for _, bad := range []string{"", "{}", `{"s":"a","r":"b","c":["x"],"k":[]}`, "not json"} {
		if _, ok := decodeScheme(bad); ok {
			t.Errorf("decodeScheme(%q) accepted", bad)
		}
	}
}
