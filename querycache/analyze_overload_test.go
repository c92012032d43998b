package querycache

import (
	"slices"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// These tests cover the pieces of overload resolution that need no server; the
// catalog tests (catalog_test.go) and the corpus check them against PostgreSQL.

func TestCandidatesFor(t *testing.T) {
	plain := &procInfo{name: "f", args: []uint32{oidInt4, oidText}}
	defaults := &procInfo{name: "f", args: []uint32{oidInt4, oidText, oidBool}, ndefaults: 2}
	variadic := &procInfo{name: "f", args: []uint32{oidInt4, 1009}, variadic: oidText}
	overloads := []*procInfo{plain, defaults, variadic}
	type want struct {
		proc   *procInfo
		params []uint32
	}
	for _, c := range []struct {
		n                   int
		named, variadicCall bool
		want                []want
	}{
		{n: 0},
		// A VARIADIC parameter takes at least one argument.
		{n: 1, want: []want{{defaults, []uint32{oidInt4}}}},
		{n: 2, want: []want{{plain, []uint32{oidInt4, oidText}}, {defaults, []uint32{oidInt4, oidText}}, {variadic, []uint32{oidInt4, oidText}}}},
		{n: 3, want: []want{{defaults, []uint32{oidInt4, oidText, oidBool}}, {variadic, []uint32{oidInt4, oidText, oidText}}}},
		{n: 4, want: []want{{variadic, []uint32{oidInt4, oidText, oidText, oidText}}}},
		// f(1, VARIADIC arr): the array is the last parameter, not expanded.
		{n: 2, variadicCall: true, want: []want{{plain, []uint32{oidInt4, oidText}}, {defaults, []uint32{oidInt4, oidText}}, {variadic, []uint32{oidInt4, 1009}}}},
		// Named arguments never expand VARIADIC; positions are left unknown.
		{n: 1, named: true, want: []want{{defaults, nil}}},
		{n: 2, named: true, want: []want{{plain, nil}, {defaults, nil}}},
	} {
		got := candidatesFor(overloads, c.n, c.named, c.variadicCall)
		var g []want
		for _, x := range got {
			g = append(g, want{x.proc, x.params})
		}
		if !slices.EqualFunc(g, c.want, func(a, b want) bool { return a.proc == b.proc && slices.Equal(a.params, b.params) }) {
			t.Errorf("n=%d named=%v variadic=%v: got %v, want %v", c.n, c.named, c.variadicCall, g, c.want)
		}
	}
}

func TestConstType(t *testing.T) {
	for sql, want := range map[string]uint32{
		"SELECT 1":                    oidInt4,
		"SELECT -2147483648":          oidInt4,
		"SELECT 2147483648":           oidInt8,
		"SELECT -9223372036854775808": oidInt8,
		"SELECT 9223372036854775808":  oidNumeric,
		"SELECT 1.5":                  oidNumeric,
		"SELECT 1e3":                  oidNumeric,
		"SELECT 'x'":                  oidUnknown,
		"SELECT NULL":                 oidUnknown,
		"SELECT true":                 oidBool,
		"SELECT 0x1F":                 oidInt4,
		"SELECT 0x1FFFFFFFF":          0, // PostgreSQL 16+ reads it as int8; not inferred
		"SELECT 1_000_000_000_000":    0,
	} {
		tree, err := pg.Parse(sql)
		if err != nil {
			t.Fatal(err)
		}
		c := tree.Stmts[0].Stmt.GetSelectStmt().TargetList[0].GetResTarget().Val.GetAConst()
		if got := constType(c).oid; got != want {
			t.Errorf("%s: type %d, want %d", sql, got, want)
		}
	}
}

func TestHasTimeWord(t *testing.T) {
	for s, want := range map[string]bool{
		"now": true, "NOW": true, "Now()": true, "today": true, "tomorrow 10:00": true, "2024-01-01 yesterday": true,
		"": false, "nowhere": false, "snow": false, "knowledge": false, "epoch": false, "infinity": false,
		"2024-01-02 03:04:05+00": false, "yes we know": false, "w y W Y": false, "x,now": true,
	} {
		if got := hasTimeWord(s); got != want {
			t.Errorf("hasTimeWord(%q) = %v", s, got)
		}
	}
}

func TestLiteralFormat(t *testing.T) {
	args := func(format string) []callArg {
		tree, err := pg.Parse("SELECT f(x, " + format + ")")
		if err != nil {
			t.Fatal(err)
		}
		fc := tree.Stmts[0].Stmt.GetSelectStmt().TargetList[0].GetResTarget().Val.GetFuncCall()
		return []callArg{{node: fc.Args[0]}, {node: fc.Args[1]}}
	}
	for format, want := range map[string]bool{
		"'YYYY-MM-DD'":       true,
		"'YYYY'::text":       true,
		"'Day'::varchar":     true,
		"'999'::regclass":    false,
		"format_col":         false,
		"$1":                 false,
		"concat('YY', 'YY')": false,
	} {
		if got := literalFormat(args(format), 1, "q"); got != want {
			t.Errorf("%s: %v", format, got)
		}
	}
	for format, forbidden := range map[string]string{"'TMMonth'": "tm", "'yyyy tm'": "tm", "'999D99'": "d", "'9G999'": "g", "'L999'": "l"} {
		if literalFormat(args(format), 1, forbidden) {
			t.Errorf("%s accepted without %s", format, forbidden)
		}
	}
	if !literalFormat(args("'FM999.99'"), 1, "d", "g", "l") || !literalFormat(args("'HH24:MI'"), 1, "tm") {
		t.Error("a safe format refused")
	}
}

// TestSettingsOnlyKeys: every entry of the list names its function with the
// argument types pg_proc gives it, in the form procInfo.key takes.
func TestSettingsOnlyKeys(t *testing.T) {
	if _, ok := settingsOnly[procKey("date_trunc", []uint32{oidText, oidTimestamptz})]; !ok {
		t.Fatal("date_trunc(text, timestamptz) missing")
	}
	if _, ok := settingsOnly[procKey("date_trunc", []uint32{oidText, oidTimestamptz, oidText})]; ok {
		t.Fatal("date_trunc with an explicit zone listed")
	}
	if _, ok := settingsOnly[procKey("age", []uint32{oidTimestamptz})]; ok {
		t.Fatal("age(timestamptz) listed: it reads the clock")
	}
	for k := range settingsOnly {
		if k == "" || k[len(k)-1] != ')' {
			t.Errorf("malformed key %q", k)
		}
	}
}
