package querycache_test

import (
	"context"
	"database/sql/driver"
	"slices"
	"strings"
	"testing"

	"github.com/pgcache/pgcache/querycache"
)

func args(vs ...any) []driver.NamedValue {
	out := make([]driver.NamedValue, len(vs))
	for i, v := range vs {
		out[i] = driver.NamedValue{Ordinal: i + 1, Value: v}
	}
	return out
}

func tagStrings(tags []querycache.Tag) []string {
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = string(t)
	}
	return out
}

// TestTags: an entry's tags follow its arguments, and invalidate computes the same
// row tags from a row's text values with the plan's schemes.
func TestTags(t *testing.T) {
	f := newFixture(t)
	a := newAnalyzer(t, querycache.AnalyzerConfig{MaxTags: 4})
	s := session(t, f.conn)
	users := querycache.Relation{Schema: "public", Name: "users"}
	orders := querycache.Relation{Schema: "public", Name: "orders"}

	p := mustPlan(t, a, s, "SELECT * FROM users u LEFT JOIN orders o ON o.user_id = u.id WHERE u.email = $1 AND u.deleted_at IS NULL")
	got := tagStrings(p.Tags(args("a@example.com")))
	rowTag := querycache.RowTag(users, []string{"deleted_at", "email"}, []querycache.Canonical{querycache.NullCanonical, mustCanon(t, querycache.ClassText, "a@example.com")})
	schemeTag := querycache.SchemeTag(users, []string{"deleted_at", "email"})
	want := []string{string(querycache.AllTag(orders)), string(querycache.WideTag(orders)), string(querycache.AllTag(users)), string(schemeTag), string(rowTag)}
	if !slices.Equal(got, want) {
		t.Fatalf("tags\n got %q\nwant %q", got, want)
	}
	// The invalidator's side: the same tag from the row's text output.
	var sc querycache.Scheme
	for _, x := range p.Schemes() {
		if x.Relation == users {
			sc = x
		}
	}
	email, _ := querycache.CanonicalText(sc.Columns[1].Class, "a@example.com")
	if tag := querycache.RowTag(users, sc.ColumnNames(), []querycache.Canonical{querycache.NullCanonical, email}); tag != rowTag {
		t.Fatalf("invalidator tag %q != entry tag %q", tag, rowTag)
	}

	// An argument that cannot be canonicalized for its column: wide, never a guess.
	got = tagStrings(p.Tags(args(42)))
	if !slices.Contains(got, string(querycache.WideTag(users))) || len(got) != 4 {
		t.Fatalf("uncanonicalizable argument: %q", got)
	}
	// A missing argument: wide.
	if got := tagStrings(p.Tags(nil)); !slices.Contains(got, string(querycache.WideTag(users))) {
		t.Fatalf("missing argument: %q", got)
	}

	// = ANY($1): one tag per element, up to MaxTags, then wide.
	p = mustPlan(t, a, s, "SELECT * FROM users WHERE id = ANY($1)")
	if got := p.Tags(args([]int64{1, 2, 3})); len(got) != 5 { // all, scheme and 3 row tags
		t.Fatalf("ANY of 3: %q", got)
	}
	if got := p.Tags(args([]int64{})); len(got) != 2 {
		t.Fatalf("ANY of nothing reads nothing of users beyond its all and scheme tags: %q", got)
	}
	if got := tagStrings(p.Tags(args([]int64{1, 2, 3, 4, 5}))); !slices.Equal(got, []string{string(querycache.AllTag(users)), string(querycache.WideTag(users))}) {
		t.Fatalf("ANY over MaxTags: %q", got)
	}
	if got := tagStrings(p.Tags(args("{1,2}"))); !slices.Contains(got, string(querycache.WideTag(users))) {
		t.Fatalf("array in text form: %q", got)
	}

	// Values of different types for one column give the same tag when PostgreSQL
	// holds them equal.
	p = mustPlan(t, a, s, "SELECT * FROM users WHERE id = $1")
	if a1, a2 := p.Tags(args(int64(7))), p.Tags(args(int32(7))); !slices.Equal(a1, a2) {
		t.Fatalf("int64 and int32 7: %q %q", a1, a2)
	}
	if a1, a2 := p.Tags(args(int64(7))), p.Tags(args(int64(8))); slices.Equal(a1, a2) {
		t.Fatal("7 and 8 share tags")
	}
}

func TestRowTagIsBounded(t *testing.T) {
	rel := querycache.Relation{Schema: "public", Name: "docs"}
	big := strings.Repeat("x", 10000)
	c1, _ := querycache.CanonicalText(querycache.ClassText, big)
	c2, _ := querycache.CanonicalText(querycache.ClassText, big+"y")
	t1 := querycache.RowTag(rel, []string{"body"}, []querycache.Canonical{c1})
	t2 := querycache.RowTag(rel, []string{"body"}, []querycache.Canonical{c2})
	if len(t1) > 200 || t1 == t2 || !strings.HasPrefix(string(t1), `"public"."docs"#("body")=`) {
		t.Fatalf("long row tags %q %q", t1, t2)
	}
	// Quoting keeps names with dots and quotes apart.
	a := querycache.AllTag(querycache.Relation{Schema: "a.b", Name: "c"})
	b := querycache.AllTag(querycache.Relation{Schema: "a", Name: "b.c"})
	if a == b {
		t.Fatal("relation names collide")
	}
}

// TestKeys: keys separate identities and argument types, and agree otherwise.
func TestKeys(t *testing.T) {
	f := newFixture(t)
	a := newAnalyzer(t, querycache.AnalyzerConfig{})
	s := session(t, f.conn)
	p := mustPlan(t, a, s, "SELECT * FROM users WHERE id = $1")
	key := func(id querycache.Identity, vs ...any) querycache.Key {
		t.Helper()
		k, ok := p.Key(&id, args(vs...))
		if !ok {
			t.Fatalf("no key for %#v", vs)
		}
		return k
	}
	base := s.Identity
	k := key(base, int64(1))
	for name, id := range map[string]querycache.Identity{
		"server":      {Server: "other", Database: base.Database, Role: base.Role, SearchPath: base.SearchPath, Settings: base.Settings},
		"database":    {Server: base.Server, Database: "other", Role: base.Role, SearchPath: base.SearchPath, Settings: base.Settings},
		"role":        {Server: base.Server, Database: base.Database, Role: "other", SearchPath: base.SearchPath, Settings: base.Settings},
		"search_path": {Server: base.Server, Database: base.Database, Role: base.Role, SearchPath: "other", Settings: base.Settings},
		"settings":    {Server: base.Server, Database: base.Database, Role: base.Role, SearchPath: base.SearchPath, Settings: "other"},
	} {
		if key(id, int64(1)) == k {
			t.Errorf("another %s shares the key", name)
		}
	}
	if key(base, "1") == k {
		t.Error(`1 and "1" share a key`)
	}
	if key(base, int64(2)) == k {
		t.Error("1 and 2 share a key")
	}
	if key(base, int32(1)) != k {
		t.Error("int32 and int64 1 differ")
	}
	if key(base, int64(1)) != k {
		t.Error("keys are not deterministic")
	}
	// Texts differing only in a literal share a fingerprint, never a key.
	p1 := mustPlan(t, a, s, "SELECT * FROM users WHERE id = 1")
	p2 := mustPlan(t, a, s, "SELECT * FROM users WHERE id = 2")
	k1, _ := p1.Key(&base, nil)
	k2, _ := p2.Key(&base, nil)
	if p1.Fingerprint != p2.Fingerprint || k1 == k2 {
		t.Errorf("fingerprints %x %x, keys %s %s", p1.Fingerprint, p2.Fingerprint, k1, k2)
	}
	if _, ok := p.Key(&base, args(make(chan int))); ok {
		t.Error("a key for an argument of unknown type")
	}
	// A date/time parameter reads these words as the current time.
	type label string
	for _, v := range []any{"now", "Today", " TOMORROW ", "yesterday 10:00", []byte("NOW"), label("now")} {
		if _, ok := p.Key(&base, args(v)); ok {
			t.Errorf("a key for %q", v)
		}
	}
	for _, v := range []any{"nowhere", "snow", "epoch", "2024-01-02", "infinity", []byte("knowledge")} {
		if _, ok := p.Key(&base, args(v)); !ok {
			t.Errorf("no key for %q", v)
		}
	}

	// The plan of '%' || $1 assumed $1 is text (an unknown-typed parameter, or a
	// Go string pgx declares as text): a float, which pgx may declare as float8
	// (whose text output depends on extra_float_digits), gets no key.
	p = mustPlan(t, a, s, "SELECT * FROM users WHERE email LIKE '%' || $1")
	if !p.Cacheable || !strings.Contains(p.Explain(), "argument $1: cached only for text values") {
		t.Fatalf("%s", p.Explain())
	}
	type name string
	for _, v := range []any{"abc", name("abc"), nil} {
		if _, ok := p.Key(&base, args(v)); !ok {
			t.Errorf("no key for %#v", v)
		}
	}
	for _, v := range []any{1.5, int64(1), []byte("abc")} {
		if _, ok := p.Key(&base, args(v)); ok {
			t.Errorf("a key for %#v", v)
		}
	}
	if len(k.String()) != 32 {
		t.Errorf("key string %q", k)
	}
}

func TestConfigValidation(t *testing.T) {
	if _, err := querycache.NewAnalyzer(querycache.AnalyzerConfig{MaxPlans: -1, CatalogTTL: -1}); err == nil ||
		!strings.Contains(err.Error(), "MaxPlans") || !strings.Contains(err.Error(), "CatalogTTL") {
		t.Fatalf("err = %v", err)
	}
}

func TestOffline(t *testing.T) {
	a := newAnalyzer(t, querycache.AnalyzerConfig{})
	p, err := a.Plan(context.Background(), nil, `SELECT * FROM "users" u WHERE u.id = $1 AND u.deleted_at IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	want := "unchecked\nread \"users\" where (deleted_at,id)=(NULL,$1)"
	if p.Cacheable || p.Summary() != want || len(p.Unchecked) == 0 {
		t.Fatalf("got %q", p.Summary())
	}
	if p := a.Offline("SELECT * FROM users FOR UPDATE"); p.Reason != querycache.ReasonLocking {
		t.Fatal(p.Summary())
	}
}

func TestDirectives(t *testing.T) {
	a := newAnalyzer(t, querycache.AnalyzerConfig{})
	p := a.Offline("SELECT 1 /* pgcache:ttl=1h30m */ -- trailing")
	if p.TTL.Minutes() != 90 || p.Off {
		t.Fatalf("%+v", p)
	}
	if p := a.Offline("SELECT 1 /* pgcache:ttl=banana */"); p.TTL != 0 || !strings.Contains(p.DirectiveError, "banana") {
		t.Fatalf("malformed ttl: %+v", p)
	}
	if p := a.Offline("SELECT 'pgcache:off'"); p.Off {
		t.Fatal("a directive inside a string literal")
	}
}

func TestReasonsAreDescribed(t *testing.T) {
	seen := map[string]bool{}
	for r := querycache.ReasonNone; r.String() != "unknown-reason"; r++ {
		if seen[r.String()] || r.Description() == "" || r.Description() == "unknown reason" {
			t.Errorf("reason %d: %q %q", r, r, r.Description())
		}
		seen[r.String()] = true
	}
	if len(seen) < 25 {
		t.Errorf("only %d reasons", len(seen))
	}
}
