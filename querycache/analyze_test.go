package querycache_test

import (
	"context"
	_ "embed"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/pgcachetest"
	"github.com/pgcache/pgcache/querycache"
)

//go:embed testdata/schema.sql
var fixtureSchema string

// fixture is a database with testdata/schema.sql loaded and a connection to it.
type fixture struct {
	dsn  string
	conn *pgx.Conn
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := pgcachetest.SharedPostgres(t)
	dsn := pg.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, fixtureSchema); err != nil {
		t.Fatalf("load schema: %v", err)
	}
	return &fixture{dsn: dsn, conn: conn}
}

// session describes conn the way the driver would.
func session(t testing.TB, conn *pgx.Conn) *querycache.Session {
	t.Helper()
	var id querycache.Identity
	err := conn.QueryRow(context.Background(),
		`SELECT inet_server_port()::text, current_database(), current_user, current_setting('search_path')`).
		Scan(&id.Server, &id.Database, &id.Role, &id.SearchPath)
	if err != nil {
		t.Fatal(err)
	}
	pc := conn.PgConn()
	id.Settings = pc.ParameterStatus("TimeZone") + "|" + pc.ParameterStatus("DateStyle") + "|" + pc.ParameterStatus("IntervalStyle")
	return &querycache.Session{Identity: id, Conn: conn}
}

func newAnalyzer(t testing.TB, cfg querycache.AnalyzerConfig) *querycache.Analyzer {
	t.Helper()
	a, err := querycache.NewAnalyzer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustPlan(t testing.TB, a *querycache.Analyzer, s *querycache.Session, sql string) *querycache.Plan {
	t.Helper()
	p, err := a.Plan(context.Background(), s, sql)
	if err != nil {
		t.Fatalf("Plan(%q): %v", sql, err)
	}
	return p
}

var update = flag.Bool("update", false, "rewrite testdata/corpus.txt with the plans the analyzer gives")

// corpusCase is one statement of testdata/corpus.txt with its expected plan summary.
type corpusCase struct {
	comments []string // lines before the statement
	sql      string
	want     []string // "=> " lines
}

// readCorpus parses testdata/corpus.txt: "#" lines are comments, a statement takes
// one line, and the lines after it that start with "=> " are its expected plan
// summary (Plan.Summary, one line each).
func readCorpus(t *testing.T, path string) []*corpusCase {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cases []*corpusCase
	var comments []string
	for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "=> "):
			if len(cases) == 0 {
				t.Fatalf("%s: expectation before any statement", path)
			}
			c := cases[len(cases)-1]
			c.want = append(c.want, strings.TrimPrefix(line, "=> "))
		case line == "" || strings.HasPrefix(line, "#"):
			comments = append(comments, line)
		default:
			cases = append(cases, &corpusCase{comments: comments, sql: line})
			comments = nil
		}
	}
	return cases
}

func writeCorpus(t *testing.T, path string, cases []*corpusCase) {
	t.Helper()
	var b strings.Builder
	for _, c := range cases {
		for _, l := range c.comments {
			b.WriteString(l + "\n")
		}
		b.WriteString(c.sql + "\n")
		for _, l := range c.want {
			b.WriteString("=> " + l + "\n")
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCorpus plans every statement of testdata/corpus.txt against the fixture
// schema on a real server and compares the plans with the expected ones.
func TestCorpus(t *testing.T) {
	const path = "testdata/corpus.txt"
	cases := readCorpus(t, path)
	if len(cases) < 150 {
		t.Fatalf("corpus has %d statements, want at least 150", len(cases))
	}
	f := newFixture(t)
	a := newAnalyzer(t, querycache.AnalyzerConfig{})
	s := session(t, f.conn)
	for _, c := range cases {
		p := mustPlan(t, a, s, c.sql)
		got := strings.Split(p.Summary(), "\n")
		if p.Cacheable && len(p.Reads) == 0 {
			t.Errorf("%s: cacheable without a read set", c.sql)
		}
		if off := a.Offline(c.sql); off.Cacheable {
			t.Errorf("%s: catalog-free plan is cacheable", c.sql)
		}
		if *update {
			c.want = got
			continue
		}
		if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("%s\n got: %s\nwant: %s", c.sql, strings.Join(got, "\n      "), strings.Join(c.want, "\n      "))
		}
	}
	if *update {
		writeCorpus(t, path, cases)
	}
}
