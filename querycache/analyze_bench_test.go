package querycache

import (
	"context"
	"database/sql/driver"
	"strconv"
	"strings"
	"testing"
	"time"
)

const benchSQL = `SELECT "users"."id", "users"."email", "users"."name" FROM "users" WHERE "users"."email" = $1 AND "users"."org_id" = $2 AND "users"."deleted_at" IS NULL ORDER BY "users"."id" LIMIT $3`

func benchAnalyzer(b *testing.B) (*Analyzer, *Session) {
	b.Helper()
	a, err := NewAnalyzer(AnalyzerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	a.source = func(*Session) catalogSource { return fakeCatalog{} }
	return a, &Session{Conn: noConn{}, Identity: Identity{Server: "127.0.0.1:5432", Database: "app", Role: "app", SearchPath: `"$user", public`, Settings: "UTC|ISO, MDY|postgres"}}
}

// BenchmarkPlanNew: a statement text seen for the first time (parse, fingerprint,
// resolution with the identity's catalog facts already cached).
func BenchmarkPlanNew(b *testing.B) {
	a, s := benchAnalyzer(b)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		sql := benchSQL + " -- " + strconv.Itoa(i)
		if p, err := a.Plan(ctx, s, sql); err != nil || !p.Cacheable {
			b.Fatal(err, p.Summary())
		}
	}
}

// BenchmarkPlanRepeated: the same text again for the same identity.
func BenchmarkPlanRepeated(b *testing.B) {
	a, s := benchAnalyzer(b)
	ctx := context.Background()
	if _, err := a.Plan(ctx, s, benchSQL); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Plan(ctx, s, benchSQL); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlanRepeatedParallel: the same, from all Ps at once (one lock).
func BenchmarkPlanRepeatedParallel(b *testing.B) {
	a, s := benchAnalyzer(b)
	ctx := context.Background()
	if _, err := a.Plan(ctx, s, benchSQL); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Plan(ctx, s, benchSQL); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

var benchArgs = []driver.NamedValue{
	{Ordinal: 1, Value: "someone@example.com"},
	{Ordinal: 2, Value: int64(42)},
	{Ordinal: 3, Value: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)},
}

// BenchmarkKey3Args: the key of a statement with three arguments.
func BenchmarkKey3Args(b *testing.B) {
	a, s := benchAnalyzer(b)
	p, err := a.Plan(context.Background(), s, benchSQL)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := p.Key(&s.Identity, benchArgs); !ok {
			b.Fatal("no key")
		}
	}
}

// BenchmarkTags: the tags of an entry of that statement.
func BenchmarkTags(b *testing.B) {
	a, s := benchAnalyzer(b)
	p, err := a.Plan(context.Background(), s, benchSQL)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(p.Tags(benchArgs)) != 3 { // all, scheme and one row tag
			b.Fatal(p.Tags(benchArgs))
		}
	}
}

// BenchmarkTimeWordScan: the scan Plan.Key runs on text arguments, on a short
// argument and on a 4 KiB one.
func BenchmarkTimeWordScan(b *testing.B) {
	long := strings.Repeat(`{"key": "value", "list": [1, 2, 3], "name": "abc"} `, 100)
	for _, s := range []string{"someone@example.com", long[:4096]} {
		b.Run(strconv.Itoa(len(s)), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				if hasTimeWord(s) {
					b.Fatal("time word")
				}
			}
		})
	}
}
