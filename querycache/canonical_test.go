package querycache_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgcache/pgcache/querycache"
)

type namedUUID [16]byte

// canonicalCases are Go arguments per column type, chosen to include values that
// PostgreSQL holds equal but Go spells differently.
var canonicalCases = []struct {
	typ   string
	class querycache.ValueClass
	args  []any
}{
	{"int4", querycache.ClassInt, []any{int64(0), int64(-5), int32(7), int(7), uint8(7), "7", float64(7), "-0", "+7", " 7", nil}},
	{"int8", querycache.ClassInt, []any{int64(1 << 40), int64(-1 << 62), "1099511627776", uint64(5)}},
	{"int2", querycache.ClassInt, []any{int16(-3), int64(-3), "-3"}},
	{"oid", querycache.ClassInt, []any{uint32(4000000000), int64(4000000000), "4000000000"}},
	{"bool", querycache.ClassBool, []any{true, false, "t", "false", "yes", nil}},
	{"text", querycache.ClassText, []any{"", "a", "héllo", `a'b"c\`, []byte("a"), strings.Repeat("x", 500), pgtype.Text{String: "a", Valid: true}}},
	{"varchar", querycache.ClassText, []any{"a", "a ", []byte("a ")}},
	{"uuid", querycache.ClassUUID, []any{
		[16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11},
		namedUUID{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11},
		"A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc999c0b4ef8bb6d6bb9bd380a11}", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12",
	}},
	{"date", querycache.ClassDate, []any{
		time.Date(2024, 2, 29, 23, 30, 0, 0, time.UTC),
		time.Date(2024, 2, 29, 23, 30, 0, 0, time.FixedZone("minus5", -5*3600)),
		time.Date(2024, 3, 1, 4, 30, 0, 0, time.FixedZone("plus5", 5*3600)),
		"2024-02-29", "2024-03-01", "0001-01-01",
	}},
	{"timestamp", querycache.ClassTimestamp, []any{
		time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC),
		time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.FixedZone("plus3", 3*3600)),
		"2024-01-02 03:04:05.123456", "2024-01-02T03:04:05", "2024-01-02 03:04:05.50",
		time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC),
	}},
	{"timestamptz", querycache.ClassTimestamptz, []any{
		time.Date(2024, 1, 2, 3, 4, 5, 123456000, time.UTC),
		time.Date(2024, 1, 2, 8, 34, 5, 123456999, time.FixedZone("IST", 5*3600+1800)),
		"2024-01-02 05:04:05.123456+02", "2024-01-02 03:04:05.123456Z", "2024-01-02 03:04:05",
		time.Date(1969, 12, 31, 23, 59, 59, 500000000, time.UTC),
	}},
	{"bytea", querycache.ClassBytea, []any{[]byte{0, 1, 2, 255}, []byte{}, []byte("a"), "a"}},
	{"numeric", querycache.ClassNumeric, []any{
		int64(1), "1.0", "1.00", float64(1.5), "1.50", "-0", "0.000", "1e3", "1000", "NaN", "-Infinity",
		"12345678901234567890.123456789", float64(0.1), float64(1e21), "0.00012", "-12.3400",
	}},
	{"mood", querycache.ClassEnum, []any{"happy", "sad", []byte("ok")}},
}

// TestCanonicalRoundTrip stores Go arguments through pgx in real columns and reads
// their text output the way pgoutput sends it. For every stored row and every
// argument, PostgreSQL's own equality must agree with the equality of the canonical
// forms (CanonicalText of the stored text, CanonicalArg of the argument) whenever
// CanonicalArg claims to know the argument.
func TestCanonicalRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, zone := range []string{"UTC", "Asia/Kolkata", "America/St_Johns"} {
		for _, c := range canonicalCases {
			t.Run(zone+"/"+c.typ, func(t *testing.T) {
				conn := f.conn
				if _, err := conn.Exec(ctx, "SET TimeZone = '"+zone+"'; SET DateStyle = ISO, MDY; SET bytea_output = hex"); err != nil {
					t.Fatal(err)
				}
				table := "rt_" + c.typ
				if _, err := conn.Exec(ctx, fmt.Sprintf("DROP TABLE IF EXISTS %s; CREATE TABLE %s (i int, v %s)", table, table, c.typ)); err != nil {
					t.Fatal(err)
				}
				// Canonical forms of the stored rows, from their text output.
				var stored []querycache.Canonical
				for i, arg := range c.args {
					if _, err := conn.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, $2)", i, arg); err != nil {
						stored = append(stored, "")
						continue // pgx or the server refuses it: nothing to cache either
					}
					var text *string
					if err := conn.QueryRow(ctx, "SELECT v::text FROM "+table+" WHERE i = $1", i).Scan(&text); err != nil {
						t.Fatal(err)
					}
					if text == nil {
						stored = append(stored, querycache.NullCanonical)
						continue
					}
					cv, ok := querycache.CanonicalText(c.class, *text)
					if !ok {
						t.Fatalf("CanonicalText(%s, %q) failed", c.class, *text)
					}
					stored = append(stored, cv)
				}
				for j, arg := range c.args {
					argCanon, ok := querycache.CanonicalArg(c.class, arg)
					if !ok {
						continue
					}
					rows, err := conn.Query(ctx, "SELECT i FROM "+table+" WHERE v = $1 OR (v IS NULL AND $1 IS NULL)", arg)
					if err != nil {
						t.Fatalf("arg %d (%T %v) canonicalized to %q but the server refuses it: %v", j, arg, arg, argCanon, err)
					}
					equal := map[int]bool{}
					for rows.Next() {
						var i int
						if err := rows.Scan(&i); err != nil {
							t.Fatal(err)
						}
						equal[i] = true
					}
					rows.Close()
					if err := rows.Err(); err != nil {
						t.Fatalf("arg %d (%T %v) canonicalized to %q but the server refuses it: %v", j, arg, arg, argCanon, err)
					}
					for i := range c.args {
						if stored[i] == "" {
							continue
						}
						if canonEqual := stored[i] == argCanon; canonEqual != equal[i] {
							t.Errorf("row %d (%v, canonical %q) vs arg %d (%T %v, canonical %q): PostgreSQL equal=%v, canonical equal=%v",
								i, c.args[i], stored[i], j, arg, arg, argCanon, equal[i], canonEqual)
						}
					}
				}
			})
		}
	}
}

func TestCanonicalRejectsGuesses(t *testing.T) {
	for _, tc := range []struct {
		class querycache.ValueClass
		v     any
	}{
		{querycache.ClassInt, "007"},
		{querycache.ClassInt, 1.5},
		{querycache.ClassInt, true},
		{querycache.ClassBool, "yes"},
		{querycache.ClassText, 5},
		{querycache.ClassDate, "02/03/2024"},
		{querycache.ClassTimestamptz, "2024-01-02 03:04:05"},
		{querycache.ClassTimestamp, "2024-01-02 03:04:05.1234567"},
		{querycache.ClassBytea, "\\x01"},
		{querycache.ClassNumeric, "1e999999"},
		{querycache.ClassUUID, "not-a-uuid"},
		{querycache.ClassNone, "x"},
		{querycache.ClassNumeric, struct{}{}},
	} {
		if c, ok := querycache.CanonicalArg(tc.class, tc.v); ok {
			t.Errorf("CanonicalArg(%s, %#v) = %q, want no canonical form", tc.class, tc.v, c)
		}
	}
	if querycache.NullCanonical == mustCanon(t, querycache.ClassText, "n") {
		t.Error("NULL collides with the text 'n'")
	}
}

func mustCanon(t *testing.T, c querycache.ValueClass, v any) querycache.Canonical {
	t.Helper()
	cv, ok := querycache.CanonicalArg(c, v)
	if !ok {
		t.Fatalf("CanonicalArg(%s, %#v) failed", c, v)
	}
	return cv
}

func FuzzCanonicalNumeric(f *testing.F) {
	for _, s := range []string{"1", "1.0", "-0.00", "1e3", ".5", "5.", "NaN", "1e-5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := querycache.CanonicalText(querycache.ClassNumeric, s)
		if !ok {
			return
		}
		// Canonical forms are fixed points.
		c2, ok := querycache.CanonicalText(querycache.ClassNumeric, c.String())
		if !ok || c2 != c {
			t.Fatalf("%q -> %q -> %q", s, c, c2)
		}
	})
}
