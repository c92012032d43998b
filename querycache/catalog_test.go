package querycache_test

import (
	"context"
	"database/sql/driver"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgcache/pgcache/querycache"
)

// TestSearchPathChoosesTheRelation: two schemas hold a table of the same name; the
// session's search_path decides which one a statement reads, and plans are kept per
// identity so the two sessions never share one.
func TestSearchPathChoosesTheRelation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := newAnalyzer(t, querycache.AnalyzerConfig{})
	const sql = "SELECT * FROM accounts WHERE id = $1"
	want := map[string]string{"tenant_a": `read "tenant_a"."accounts" where (id)=($1)`, "tenant_b": `read "tenant_b"."accounts" where (id)=($1)`}
	var keys []querycache.Key
	for _, schema := range []string{"tenant_a", "tenant_b", "tenant_a"} {
		if _, err := f.conn.Exec(ctx, "SET search_path = "+schema); err != nil {
			t.Fatal(err)
		}
		s := session(t, f.conn)
		p := mustPlan(t, a, s, sql)
		if !p.Cacheable || len(p.Reads) != 1 || p.Reads[0].String() != want[schema] {
			t.Fatalf("search_path %s: plan\n%s", schema, p.Summary())
		}
		k, ok := p.Key(&s.Identity, []driver.NamedValue{{Ordinal: 1, Value: int64(1)}})
		if !ok {
			t.Fatal("no key")
		}
		keys = append(keys, k)
	}
	if keys[0] == keys[1] || keys[0] != keys[2] {
		t.Errorf("keys per search_path: %v", keys)
	}
	if _, err := f.conn.Exec(ctx, "SET search_path = nowhere"); err != nil {
		t.Fatal(err)
	}
	if p := mustPlan(t, a, session(t, f.conn), sql); p.Cacheable || p.Reason != querycache.ReasonUnknownObject {
		t.Errorf("unresolvable name: %s", p.Summary())
	}
}

// TestTemporaryObjects: a temporary table shadows a permanent one for its session
// only. Statements creating one are flagged, and a session flagged so caches
// nothing; a temporary table named outright is refused.
func TestTemporaryObjects(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := newAnalyzer(t, querycache.AnalyzerConfig{})
	s := session(t, f.conn)
	create := "CREATE TEMP TABLE users (id int)"
	if p := mustPlan(t, a, s, create); !p.CreatesTemp || p.Cacheable {
		t.Fatalf("CREATE TEMP: %+v", p)
	}
	if p := mustPlan(t, a, s, "CREATE TABLE x (id int)"); p.CreatesTemp {
		t.Fatal("CREATE TABLE flagged as temporary")
	}
	if _, err := f.conn.Exec(ctx, create); err != nil {
		t.Fatal(err)
	}
	if p := mustPlan(t, a, s, "SELECT * FROM pg_temp.users"); p.Reason != querycache.ReasonTemporaryTable {
		t.Errorf("pg_temp.users: %s", p.Summary())
	}
	s.TempObjects = true
	if p := mustPlan(t, a, s, "SELECT * FROM public.users"); p.Reason != querycache.ReasonTempObjects {
		t.Errorf("session with temporary objects: %s", p.Summary())
	}
	s.TempObjects, s.InTransaction = false, true
	if p := mustPlan(t, a, s, "SELECT * FROM public.users"); p.Reason != querycache.ReasonInTransaction {
		t.Errorf("in a transaction: %s", p.Summary())
	}
}

// TestInvalidateCatalog: a schema change is seen at once after InvalidateCatalog,
// and after CatalogTTL without it.
func TestInvalidateCatalog(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := newAnalyzer(t, querycache.AnalyzerConfig{CatalogTTL: time.Hour})
	s := session(t, f.conn)
	const sql = "SELECT * FROM orgs WHERE id = $1"
	if p := mustPlan(t, a, s, sql); !p.Cacheable {
		t.Fatal(p.Summary())
	}
	if _, err := f.conn.Exec(ctx, "ALTER TABLE orgs ENABLE ROW LEVEL SECURITY"); err != nil {
		t.Fatal(err)
	}
	if p := mustPlan(t, a, s, sql); !p.Cacheable {
		t.Fatal("the plan was redone before its TTL without InvalidateCatalog")
	}
	a.InvalidateCatalog(querycache.Relation{Schema: "public", Name: "orgs"})
	if p := mustPlan(t, a, s, sql); p.Reason != querycache.ReasonRowSecurity {
		t.Fatalf("after InvalidateCatalog: %s", p.Summary())
	}

	short := newAnalyzer(t, querycache.AnalyzerConfig{CatalogTTL: 50 * time.Millisecond})
	const sql2 = "SELECT * FROM pets WHERE id = $1"
	if p := mustPlan(t, short, s, sql2); !p.Cacheable {
		t.Fatal(p.Summary())
	}
	if _, err := f.conn.Exec(ctx, "ALTER TABLE pets SET UNLOGGED"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if p := mustPlan(t, short, s, sql2); p.Reason != querycache.ReasonUnloggedTable {
		t.Fatalf("after the TTL: %s", p.Summary())
	}
}

// TestUserFunctionVolatility: volatility comes from pg_proc, so a user function
// turned VOLATILE stops caching.
func TestUserFunctionVolatility(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := newAnalyzer(t, querycache.AnalyzerConfig{})
	s := session(t, f.conn)
	const sql = "SELECT add_one(age) FROM users WHERE id = $1"
	if p := mustPlan(t, a, s, sql); !p.Cacheable {
		t.Fatal(p.Summary())
	}
	if _, err := f.conn.Exec(ctx, "ALTER FUNCTION add_one(integer) VOLATILE"); err != nil {
		t.Fatal(err)
	}
	a.InvalidateCatalog()
	if p := mustPlan(t, a, s, sql); p.Reason != querycache.ReasonVolatileFunction || !strings.Contains(p.Detail, "add_one(integer)") {
		t.Fatalf("after ALTER FUNCTION ... VOLATILE: %s", p.Summary())
	}
}

// TestOverloadResolution: a call is judged by the overloads it may resolve to (by
// argument count, defaults, VARIADIC, named arguments and argument types), and
// refused when any of those is not safe, so an ambiguous call is refused.
func TestOverloadResolution(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, ddl := range []string{
		// add_one(integer) IMMUTABLE is in the fixture.
		"CREATE FUNCTION add_one(text) RETURNS text LANGUAGE sql VOLATILE AS 'SELECT $1'",
		"CREATE FUNCTION fmt(n int, VARIADIC parts text[]) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $2[1]'",
		"CREATE FUNCTION fmt(n int) RETURNS text LANGUAGE sql VOLATILE AS 'SELECT random()::text'",
		"CREATE FUNCTION dflt(a int, b int DEFAULT 1) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + $2'",
		"CREATE FUNCTION dflt(a int, b int, c int) RETURNS int LANGUAGE sql VOLATILE AS 'SELECT $1'",
		// An implicit cast through a VOLATILE function: any call converting a
		// color to an integer runs it.
		"CREATE TYPE color AS ENUM ('red', 'green')",
		"CREATE FUNCTION color_num(color) RETURNS integer LANGUAGE sql VOLATILE AS 'SELECT 1'",
		"CREATE CAST (color AS integer) WITH FUNCTION color_num(color) AS IMPLICIT",
		"CREATE TABLE paint (id integer PRIMARY KEY, c color)",
		// A function of a table's row type.
		"CREATE FUNCTION org_label(orgs) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT $1.name'",
	} {
		if _, err := f.conn.Exec(ctx, ddl); err != nil {
			t.Fatalf("%s: %v", ddl, err)
		}
	}
	a := newAnalyzer(t, querycache.AnalyzerConfig{})
	s := session(t, f.conn)
	for _, c := range []struct {
		sql    string
		reason querycache.Reason
		detail string // a part of the refusal's detail
	}{
		// add_one(integer) IMMUTABLE, add_one(text) VOLATILE.
		{"SELECT add_one(age) FROM users", querycache.ReasonNone, ""},
		{"SELECT add_one($1::int) FROM users", querycache.ReasonNone, ""},
		{"SELECT add_one(level) FROM users", querycache.ReasonNone, ""}, // a domain over integer
		{"SELECT add_one(id::int) + 1 FROM users", querycache.ReasonNone, ""},
		{"SELECT add_one(email) FROM users", querycache.ReasonVolatileFunction, "add_one(text) is VOLATILE"},
		{"SELECT add_one(name) FROM users", querycache.ReasonVolatileFunction, "add_one(text)"}, // varchar converts to text only
		{"SELECT add_one('5') FROM users", querycache.ReasonVolatileFunction, "one of several overloads"},
		{"SELECT add_one($1) FROM users", querycache.ReasonVolatileFunction, "one of several overloads"},
		{"SELECT add_one(id) FROM users", querycache.ReasonUnknownObject, "no overload"}, // bigint converts to neither
		// VARIADIC: fmt(int, VARIADIC text[]) IMMUTABLE, fmt(int) VOLATILE.
		{"SELECT fmt(age, email, 'x') FROM users", querycache.ReasonNone, ""},
		{"SELECT fmt(age, VARIADIC ARRAY[email]) FROM users", querycache.ReasonNone, ""},
		{"SELECT fmt(age) FROM users", querycache.ReasonVolatileFunction, "fmt(integer) is VOLATILE"},
		// Defaults and named arguments: dflt(a, b DEFAULT 1) IMMUTABLE, dflt(a, b, c) VOLATILE.
		{"SELECT dflt(age) FROM users", querycache.ReasonNone, ""},
		{"SELECT dflt(age, 2) FROM users", querycache.ReasonNone, ""},
		{"SELECT dflt(a => age) FROM users", querycache.ReasonNone, ""},
		{"SELECT dflt(age, 2, 3) FROM users", querycache.ReasonVolatileFunction, "dflt(integer,integer,integer)"},
		{"SELECT dflt(a => age, b => 2, c => 3) FROM users", querycache.ReasonVolatileFunction, "dflt(integer,integer,integer)"},
		// The implicit cast from color to integer is VOLATILE.
		{"SELECT add_one(c) FROM paint", querycache.ReasonVolatileFunction, "converted to integer"},
		{"SELECT c + 1 FROM paint", querycache.ReasonVolatileOperator, "converted to integer"},
		{"SELECT c FROM paint WHERE c = 'red'", querycache.ReasonVolatileOperator, "converted to integer"}, // int4eq is a candidate
		{"SELECT c FROM paint WHERE id = 1", querycache.ReasonNone, ""},
		// A whole-row reference has the row type; a row built otherwise is
		// converted field by field.
		{"SELECT org_label(o) FROM orgs o", querycache.ReasonNone, ""},
		{"SELECT org_label(o.*) FROM orgs o WHERE id = $1", querycache.ReasonNone, ""},
		{"SELECT org_label(ROW(id, name, parent_id)) FROM orgs", querycache.ReasonVolatileFunction, "converted to orgs"},
	} {
		p := mustPlan(t, a, s, c.sql)
		if p.Reason != c.reason || !strings.Contains(p.Detail, c.detail) {
			t.Errorf("%s: %s, want %s (%s)", c.sql, p.Summary(), c.reason, c.detail)
		}
	}
}

// TestPublishedHook: relations outside the publication are refused.
func TestPublishedHook(t *testing.T) {
	f := newFixture(t)
	a := newAnalyzer(t, querycache.AnalyzerConfig{Published: func(r querycache.Relation) bool { return r.Name != "orders" }})
	s := session(t, f.conn)
	if p := mustPlan(t, a, s, "SELECT * FROM users WHERE id = 1"); !p.Cacheable {
		t.Fatal(p.Summary())
	}
	p := mustPlan(t, a, s, "SELECT * FROM user_orders")
	if p.Reason != querycache.ReasonNotPublished || !strings.Contains(p.Detail, "orders") {
		t.Fatal(p.Summary())
	}
}

// TestPublishedPartitions: a partitioned table is published through its
// partitions (what pg_publication_tables lists by default) or, with
// publish_via_partition_root, through itself; either way it is cached, and a
// missing partition is refused.
func TestPublishedPartitions(t *testing.T) {
	f := newFixture(t)
	s := session(t, f.conn)
	const sql = "SELECT * FROM events WHERE id = $1"
	leaves := []string{"events_2024", "events_2025_a", "events_2025_b"}
	for _, c := range []struct {
		name      string
		published []string
		refused   string // "" when cacheable
	}{
		{"leaves listed", leaves, ""},
		{"via the root", []string{"events"}, ""},
		{"a leaf missing", []string{"events_2024", "events_2025_a"}, "events_2025_b"},
		{"nothing", nil, "events_2024"},
	} {
		a := newAnalyzer(t, querycache.AnalyzerConfig{Published: func(r querycache.Relation) bool { return slices.Contains(c.published, r.Name) }})
		p := mustPlan(t, a, s, sql)
		switch {
		case c.refused == "" && (!p.Cacheable || len(p.Reads) != 5):
			t.Errorf("%s: want cacheable, reading the root, the sub-root and the leaves: %s", c.name, p.Summary())
		case c.refused != "" && (p.Reason != querycache.ReasonNotPublished || !strings.Contains(p.Detail, c.refused)):
			t.Errorf("%s: want refused for %s: %s", c.name, c.refused, p.Summary())
		}
	}
}

// TestPlanCacheBound: the plan cache forgets old statements but stays correct.
func TestPlanCacheBound(t *testing.T) {
	f := newFixture(t)
	a := newAnalyzer(t, querycache.AnalyzerConfig{MaxPlans: 4, MaxStatements: 4, MaxCatalogEntries: 3})
	s := session(t, f.conn)
	for round := 0; round < 3; round++ {
		for _, table := range []string{"users", "orgs", "orders", "pets", "cars", "place"} {
			p := mustPlan(t, a, s, "SELECT * FROM "+table+" WHERE id = 1")
			if table == "place" {
				if !p.Cacheable || !p.Reads[0].Wide {
					t.Fatal(p.Summary())
				}
				continue
			}
			if !p.Cacheable || p.Reads[0].Wide {
				t.Fatal(p.Summary())
			}
		}
	}
}

// TestSchemes: the column sets invalidate must register.
func TestSchemes(t *testing.T) {
	f := newFixture(t)
	a := newAnalyzer(t, querycache.AnalyzerConfig{})
	s := session(t, f.conn)
	p := mustPlan(t, a, s, "SELECT * FROM users u JOIN orders o ON o.user_id = u.id AND o.status = $2 WHERE u.email = $1 AND u.deleted_at IS NULL")
	var got []string
	for _, sc := range p.Schemes() {
		var cols []string
		for _, c := range sc.Columns {
			cols = append(cols, c.Name+":"+c.Class.String())
		}
		got = append(got, sc.Relation.String()+"("+strings.Join(cols, ",")+")")
	}
	want := []string{`"public"."orders"(status:text)`, `"public"."users"(deleted_at:timestamptz,email:text)`}
	if !slices.Equal(got, want) {
		t.Fatalf("schemes %v, want %v", got, want)
	}
}
