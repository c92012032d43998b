package querycache

import (
	"context"
	"database/sql/driver"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// fakeCatalog answers every name, so the fuzzer reaches resolution without a server:
// any relation is a table (id bigint primary key, name, email text, org_id int, at, deleted_at timestamptz) unless
// its name says otherwise, and functions are immutable unless named like volatile ones.
type fakeCatalog struct{}

func (fakeCatalog) relations(_ context.Context, names []qname) (map[qname]*relInfo, error) {
	out := map[qname]*relInfo{}
	for _, n := range names {
		schema := n.schema
		if schema == "" {
			schema = "public"
		}
		r := &relInfo{found: true, oid: 1, rel: Relation{Schema: schema, Name: n.name}, kind: 'r', persistence: 'p',
			columns: map[string]colInfo{
				"id":         fakeColumn(oidInt8, ClassInt),
				"name":       fakeColumn(oidText, ClassText),
				"at":         fakeColumn(oidTimestamptz, ClassTimestamptz),
				"email":      fakeColumn(oidText, ClassText),
				"org_id":     fakeColumn(oidInt4, ClassInt),
				"deleted_at": fakeColumn(oidTimestamptz, ClassTimestamptz),
			},
			primaryKey: []string{"id"},
		}
		switch {
		case strings.HasPrefix(n.name, "v"):
			r.kind, r.viewDef = 'v', "SELECT * FROM base_"+n.name+" WHERE id = 1"
		case strings.HasPrefix(n.name, "s"):
			r.kind = 'S'
		case strings.HasPrefix(n.name, "p"):
			r.kind = 'p'
			r.descendants = []*relInfo{{found: true, rel: Relation{Schema: schema, Name: n.name + "_1"}, kind: 'r', persistence: 'p'}}
		case strings.HasPrefix(n.name, "x"):
			r.found = false
		}
		out[n] = r
	}
	return out, nil
}

func fakeColumn(oid uint32, class ValueClass) colInfo {
	t := builtinType(oid)
	t.dateTime = dateTimeOIDs[oid]
	return colInfo{typeOID: oid, t: t, class: class, dateTime: t.dateTime}
}

func (fakeCatalog) functions(_ context.Context, names []qname) (map[qname]funcInfo, error) {
	out := map[qname]funcInfo{}
	for _, n := range names {
		vol := byte('i')
		if strings.Contains(n.name, "now") || strings.Contains(n.name, "rand") {
			vol = 'v'
		}
		f := funcInfo{overloads: []*procInfo{
			fakeProc(n.name, vol, oidText),
			fakeProc(n.name, vol, oidText, oidAny),
		}}
		f.overloads[1].variadic = oidAny
		if n.name == "date" {
			f.asType = oidDate
		}
		out[n] = f
	}
	return out, nil
}

func fakeProc(name string, vol byte, ret uint32, args ...uint32) *procInfo {
	return &procInfo{oid: 1, schema: "pg_catalog", name: name, builtin: true, signature: name + "(...)",
		key: procKey(name, args), args: args, ret: ret, volatility: vol}
}

func (fakeCatalog) operators(_ context.Context, names []qname) (map[qname][]opOverload, error) {
	out := map[qname][]opOverload{}
	for _, n := range names {
		for _, t := range []uint32{oidText, oidInt4, oidInt8, oidTimestamptz} {
			out[n] = append(out[n], opOverload{left: t, right: t, result: t, proc: fakeProc("f", 'i', t, t, t)})
		}
		if n.name == "||" {
			out[n] = append(out[n], opOverload{left: oidInt8, right: oidText, result: oidText, proc: fakeProc("g", 's', oidText, oidInt8, oidText)})
		}
	}
	return out, nil
}

func (fakeCatalog) types(_ context.Context, names []qname) (map[qname]typeInfo, error) {
	out := map[qname]typeInfo{}
	for _, n := range names {
		f := builtinType(oidText)
		if n.name == "date" {
			f = builtinType(oidDate)
			f.dateTime = true
		}
		out[n] = typeInfo{found: true, facts: f, class: ClassOf(f.oid)}
	}
	return out, nil
}

func (fakeCatalog) typeFacts(_ context.Context, oids []uint32) (map[uint32]typeFacts, error) {
	out := map[uint32]typeFacts{}
	for _, o := range oids {
		f := builtinType(o)
		switch o {
		case oidAny, oidAnyElement, oidAnyArray, oidAnyNonArray, oidRecord:
			f.kind, f.baseKind = kindPseudo, kindPseudo
		case oidDate, oidTimestamptz:
			f.dateTime = true
		}
		out[o] = f
	}
	return out, nil
}

func (fakeCatalog) casts(context.Context) (*castTable, error) {
	t := &castTable{complete: true, casts: map[[2]uint32]castInfo{
		{oidInt4, oidInt8}:        {context: 'i', method: 'f', fn: fakeProc("int8", 'i', oidInt8, oidInt4)},
		{oidText, 2205}:           {context: 'i', method: 'f', fn: fakeProc("regclass", 's', 2205, oidText)},
		{oidTime, oidTimetz}:      {context: 'i', method: 'f', fn: fakeProc("timetz", 's', oidTimetz, oidTime)},
		{oidDate, oidTimestamptz}: {context: 'i', method: 'f', fn: fakeProc("timestamptz", 's', oidTimestamptz, oidDate)},
		{oidTimestamptz, oidDate}: {context: 'a', method: 'f', fn: fakeProc("date", 's', oidDate, oidTimestamptz)},
		{oidVarchar, oidText}:     {context: 'i', method: 'b'},
	}}
	t.derive()
	return t, nil
}

// noConn stands for a connection; the fake catalog never uses it.
type noConn struct{}

func (noConn) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errors.New("no connection")
}

func FuzzAnalyze(f *testing.F) {
	data, err := os.ReadFile("testdata/corpus.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "=> ") {
			f.Add(line)
		}
	}
	a, err := NewAnalyzer(AnalyzerConfig{MaxPlans: 64, MaxStatements: 64})
	if err != nil {
		f.Fatal(err)
	}
	a.source = func(*Session) catalogSource { return fakeCatalog{} }
	sess := &Session{Conn: noConn{}, Identity: Identity{Database: "fuzz"}}
	argSets := [][]driver.NamedValue{nil, {{Ordinal: 1, Value: int64(1)}, {Ordinal: 2, Value: "x"}, {Ordinal: 3, Value: []int64{1, 2}}}}
	f.Fuzz(func(t *testing.T, sql string) {
		p, err := a.Plan(context.Background(), sess, sql)
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		if p.Cacheable && len(p.Reads) == 0 {
			t.Fatalf("cacheable plan without a read set: %q", sql)
		}
		if p.Cacheable != (p.Reason == ReasonNone) {
			t.Fatalf("Cacheable %v with reason %s", p.Cacheable, p.Reason)
		}
		off := a.Offline(sql)
		if off.Cacheable {
			t.Fatalf("catalog-free plan is cacheable: %q", sql)
		}
		_ = p.Explain() + p.Summary() + off.Explain()
		for _, args := range argSets {
			tags := p.Tags(args)
			if p.Cacheable && len(tags) < len(p.Reads) {
				t.Fatalf("%d tags for %d reads", len(tags), len(p.Reads))
			}
			p.Key(&sess.Identity, args)
		}
		_ = p.Schemes()
	})
}
