package integration_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgcache/pgcache/pgcachetest"
)

// The cache's fidelity: a result answered from the cache is what PostgreSQL would
// have answered, as the application sees it through database/sql. Every query runs
// through pgx's own driver (the reference), then through pgcache cold (a miss that
// fills the cache), warm (an in-process hit) and through a second *sql.DB that
// shares the first one's Redis and has an empty in-process cache (a Redis hit,
// which goes through the result codec). Counters prove which path answered.

// customSchema adds user-defined types to typesSchema's (which has the mood enum):
// domains over a scalar, a varchar and an array, composites (nested, with arrays,
// enums, quoting), and arrays of each.
var customSchema = []string{
	`CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)`,
	`CREATE DOMAIN short_text AS varchar(10)`,
	`CREATE DOMAIN int_list AS int4[]`,
	`CREATE TYPE pair AS (a int, b text)`,
	`CREATE TYPE nested AS (p pair, tags text[], m mood, at timestamptz, n numeric)`,
	`CREATE TABLE all_custom (
		id         int PRIMARY KEY,
		c_posint   posint,
		c_short    short_text,
		c_int_list int_list,
		c_pair     pair,
		c_nested   nested,
		c_pairs    pair[],
		c_moods    mood[],
		c_posints  posint[],
		c_nesteds  nested[]
	)`,
	`INSERT INTO all_custom VALUES
		(1, 7, 'short', '{1,NULL,3}', ROW(1, 'x'),
		 ROW(ROW(2, 'y "quoted", (paren)'), '{a,NULL,"b,c"}', 'happy', '2024-01-02 03:04:05.5+01', 1.50)::nested,
		 ARRAY[ROW(1, 'a'), NULL, ROW(NULL, NULL)]::pair[], '{sad,happy,NULL}', '{1,2}',
		 ARRAY[ROW(NULL, NULL, NULL, NULL, NULL)::nested, NULL]),
		(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
		(3, 2147483647, '', '{}', ROW(NULL, NULL), ROW(NULL, '{}', 'sad', '-infinity', 'NaN')::nested,
		 '{}', '{}', '{}', '{}')`,
}

// arraysOfAllTypes creates all_type_arrays: for every column of all_types, an
// array of its type holding the row's value, a NULL element and the value again
// (two-dimensional for the array columns), plus a row of NULL arrays. It is built
// from the catalog, so a type added to typesSchema is covered here too.
func arraysOfAllTypes(t *testing.T, admin *sql.DB) {
	t.Helper()
	ctx := testContext(t)
	rows, err := admin.QueryContext(ctx, `SELECT attname, attndims > 0 OR t.typcategory = 'A'
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
		WHERE attrelid = 'all_types'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'id'
		ORDER BY attnum`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var exprs []string
	for rows.Next() {
		var col string
		var isArray bool
		if err := rows.Scan(&col, &isArray); err != nil {
			t.Fatal(err)
		}
		if isArray {
			exprs = append(exprs, fmt.Sprintf("ARRAY[%[1]s, %[1]s] AS %[1]s", col))
		} else {
			exprs = append(exprs, fmt.Sprintf("ARRAY[%[1]s, NULL, %[1]s] AS %[1]s", col))
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(exprs) < 20 {
		t.Fatalf("all_types has %d columns besides id, want at least 20", len(exprs))
	}
	mustExec(t, admin,
		`CREATE TABLE all_type_arrays AS SELECT id, `+strings.Join(exprs, ", ")+` FROM all_types`,
		`ALTER TABLE all_type_arrays ADD PRIMARY KEY (id)`,
		`INSERT INTO all_type_arrays (id) VALUES (4)`)
}

// redisDBs hands out Redis database numbers to the tests of this package that
// inspect or disturb what the shared Redis holds: 0 is TestSharedRedisHit's, the
// last (15 of Redis's default 16) the benchmarks'.
var redisDBs atomic.Int32

const benchRedisDB = 15

// sharedRedisURL returns the URL of a database of the shared Redis that no other
// test of this package uses.
func sharedRedisURL(t testing.TB) string {
	t.Helper()
	n := redisDBs.Add(1)
	if n >= benchRedisDB {
		t.Fatalf("more than %d tests want a Redis database of their own", benchRedisDB-1)
	}
	return redisURLWithDB(t, pgcachetest.SharedRedis(t).URL(), int(n))
}

// redisURLWithDB returns a Redis URL naming database n.
func redisURLWithDB(tb testing.TB, redisURL string, n int) string {
	tb.Helper()
	u, err := url.Parse(redisURL)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = fmt.Sprintf("/%d", n)
	return u.String()
}

// withRedis adds pgcache_redis to a DSN.
func withRedis(dsn, redisURL string) string {
	return withParams(dsn, "pgcache_redis="+url.QueryEscape(redisURL))
}

// captured is everything an application can observe of a query's result.
type captured struct {
	Columns []columnMeta
	// Any holds every value scanned into *any.
	Any [][]any
	// Typed holds, per row and column, the outcome of scanning the value into
	// each destination of scanDests, by name.
	Typed [][]map[string]scanOutcome
}

// scanOutcome is the value a destination received, or the scan's error.
type scanOutcome struct {
	Value any
	Err   *errShape
}

// scanDest makes a new destination of one kind for one scan.
type scanDest struct {
	name string
	make func(m *pgtype.Map) (dest any, value func() any)
}

// ptrDest is a destination that is a pointer to a new T.
func ptrDest[T any](name string) scanDest {
	return scanDest{name, func(*pgtype.Map) (any, func() any) {
		p := new(T)
		return p, func() any { return *p }
	}}
}

// mapDest is pgx's sql.Scanner for a Go type the pgtype.Map knows (arrays).
func mapDest[T any](name string) scanDest {
	return scanDest{name, func(m *pgtype.Map) (any, func() any) {
		p := new(T)
		return m.SQLScanner(p), func() any { return *p }
	}}
}

// scanDests are the destinations every value is scanned into: database/sql's
// conversions to Go types and its Null* types, pgtype's sql.Scanner types, and
// pgx's array scanner. Most fail for most columns; the errors must be the same too.
var scanDests = []scanDest{
	ptrDest[string]("string"),
	ptrDest[[]byte]("[]byte"),
	ptrDest[sql.NullString]("sql.NullString"),
	ptrDest[sql.NullInt64]("sql.NullInt64"),
	ptrDest[sql.NullInt32]("sql.NullInt32"),
	ptrDest[sql.NullInt16]("sql.NullInt16"),
	ptrDest[*uint64]("*uint64"),
	ptrDest[sql.NullFloat64]("sql.NullFloat64"),
	ptrDest[*float32]("*float32"),
	ptrDest[sql.NullBool]("sql.NullBool"),
	ptrDest[sql.NullTime]("sql.NullTime"),
	ptrDest[*json.RawMessage]("*json.RawMessage"),
	ptrDest[pgtype.Numeric]("pgtype.Numeric"),
	ptrDest[pgtype.Interval]("pgtype.Interval"),
	ptrDest[pgtype.UUID]("pgtype.UUID"),
	ptrDest[pgtype.Text]("pgtype.Text"),
	ptrDest[pgtype.Date]("pgtype.Date"),
	ptrDest[pgtype.Timestamp]("pgtype.Timestamp"),
	ptrDest[pgtype.Timestamptz]("pgtype.Timestamptz"),
	ptrDest[pgtype.Int8]("pgtype.Int8"),
	ptrDest[pgtype.Float8]("pgtype.Float8"),
	ptrDest[pgtype.Bool]("pgtype.Bool"),
	mapDest[[]pgtype.Text]("[]pgtype.Text"),
	mapDest[[]*int64]("[]*int64"),
	mapDest[[][]*int32]("[][]*int32"),
	mapDest[[]pgtype.Numeric]("[]pgtype.Numeric"),
	mapDest[[]*time.Time]("[]*time.Time"),
}

// capture runs query through db and records what the application sees.
func capture(ctx context.Context, db *sql.DB, query string, args ...any) (captured, error) {
	var c captured
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return c, err
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return c, err
	}
	for _, ct := range types {
		m := columnMeta{Name: ct.Name(), DatabaseTypeName: ct.DatabaseTypeName(), ScanType: ct.ScanType().String()}
		m.Length, m.HasLength = ct.Length()
		m.Precision, m.Scale, m.HasDecimalSize = ct.DecimalSize()
		m.Nullable, m.HasNullable = ct.Nullable()
		c.Columns = append(c.Columns, m)
	}
	pgMap := pgtype.NewMap()
	n := len(types)
	for rows.Next() {
		// Everything into *any first.
		vals := make([]any, n)
		dest := make([]any, n)
		for i := range vals {
			dest[i] = &vals[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return c, err
		}
		c.Any = append(c.Any, vals)
		// Then each column into each typed destination, the other columns into
		// *any: database/sql converts from the same row each time.
		typed := make([]map[string]scanOutcome, n)
		for col := range n {
			typed[col] = make(map[string]scanOutcome, len(scanDests))
			for _, sd := range scanDests {
				d, value := sd.make(pgMap)
				dest[col] = d
				err := rows.Scan(dest...)
				typed[col][sd.name] = scanOutcome{Value: value(), Err: shapeOf(err)}
			}
			dest[col] = &vals[col]
		}
		c.Typed = append(c.Typed, typed)
	}
	return c, rows.Err()
}

// fidelityQuery is one query of the fidelity test and the rows it returns.
type fidelityQuery struct {
	sql  string
	args []any
	rows int
}

// TestCacheFidelity compares what pgx, pgcache cold, pgcache warm and pgcache from
// Redis return for every type: values scanned into any and into typed
// destinations, and every ColumnTypes answer.
func TestCacheFidelity(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	admin := openDB(t, "pgx", dsn)
	mustExec(t, admin, typesSchema...)
	mustExec(t, admin, customSchema...)
	arraysOfAllTypes(t, admin)

	cached := withParams(withRedis(dsn, sharedRedisURL(t)), steadyLag)
	ref := openDB(t, "pgx", dsn)
	db := openDB(t, "pgcache", cached)
	fromRedis := openDB(t, "pgcache", cached)
	// Both stream before anything is filled: a change stream that starts flushes
	// the shared Redis.
	waitAllStreaming(t, admin, db, fromRedis)

	var queries []fidelityQuery
	for table, rows := range map[string]int{"all_types": 3, "all_type_arrays": 4, "all_custom": 3} {
		queries = append(queries, fidelityQuery{sql: `SELECT * FROM ` + table + ` ORDER BY id`, rows: rows})
		for id := 1; id <= rows; id++ {
			queries = append(queries, fidelityQuery{sql: `SELECT * FROM ` + table + ` WHERE id = $1`, args: []any{id}, rows: 1})
		}
	}
	// Expressions over the types, and a column order of the query's own.
	queries = append(queries,
		fidelityQuery{sql: `SELECT c_mood, c_int_array[2] AS second, c_jsonb -> 'a' AS a, c_numeric * 2 AS twice, id
			FROM all_types WHERE id = $1`, args: []any{1}, rows: 1},
		fidelityQuery{sql: `SELECT (c_pair).b, (c_nested).p, c_moods[1] AS m FROM all_custom WHERE id = $1`, args: []any{1}, rows: 1},
	)

	var scans, scanned int    // typed scans of the reference, and how many succeeded
	var fromL2, redisSlow int // reads through the second *sql.DB, and those Redis was too slow for
	for _, q := range queries {
		name := q.sql
		if len(q.args) > 0 {
			name += fmt.Sprintf(" %v", q.args)
		}
		t.Run(name, func(t *testing.T) {
			want, err := capture(ctx, ref, q.sql, q.args...)
			if err != nil {
				t.Fatalf("pgx: %v", err)
			}
			if len(want.Any) != q.rows {
				t.Fatalf("pgx returned %d rows, want %d", len(want.Any), q.rows)
			}
			for _, row := range want.Typed {
				for _, col := range row {
					for _, o := range col {
						scans++
						if o.Err == nil {
							scanned++
						}
					}
				}
			}

			before := stats(t, db)
			cold, err := capture(ctx, db, q.sql, q.args...)
			after := stats(t, db)
			if after.Misses != before.Misses+1 || after.FillsL1 != before.FillsL1+1 || after.HitsL1 != before.HitsL1 {
				t.Fatalf("cold read: want one miss and one fill: before %+v, after %+v", before.Stats, after.Stats)
			}
			diffCapture(t, "pgcache cold", want, cold, err)

			before = after
			warm, err := capture(ctx, db, q.sql, q.args...)
			after = stats(t, db)
			if after.HitsL1 != before.HitsL1+1 {
				t.Fatalf("warm read: want one L1 hit: before %+v, after %+v", before.Stats, after.Stats)
			}
			diffCapture(t, "pgcache warm", want, warm, err)

			// The fill reaches Redis through a queue.
			deadline := time.Now().Add(5 * time.Second)
			for stats(t, db).FillsL2 < after.FillsL1 {
				if time.Now().After(deadline) {
					t.Fatalf("the fill did not reach Redis: %+v", stats(t, db).Stats)
				}
				time.Sleep(2 * time.Millisecond)
			}
			before = stats(t, fromRedis)
			l2, err := capture(ctx, fromRedis, q.sql, q.args...)
			after = stats(t, fromRedis)
			fromL2++
			switch {
			case after.Timeouts > before.Timeouts && after.Misses == before.Misses+1:
				// Redis answered after the lookup's deadline (a loaded machine):
				// the read went to PostgreSQL, as it must. Counted below.
				redisSlow++
			case after.HitsL2 != before.HitsL2+1 || after.HitsL1 != before.HitsL1:
				t.Fatalf("read through the second *sql.DB: want one Redis hit: before %+v, after %+v", before.Stats, after.Stats)
			}
			diffCapture(t, "pgcache from Redis", want, l2, err)
		})
	}
	if t.Failed() {
		return
	}
	t.Logf("%d typed scans compared, %d of them successful", scans, scanned)
	if redisSlow > fromL2/4 {
		t.Errorf("Redis lookups timed out for %d of %d reads: too many to say the Redis path was compared", redisSlow, fromL2)
	}
	if scanned < scans/5 {
		t.Errorf("only %d of %d typed scans succeeded: the destinations do not fit the types", scanned, scans)
	}

	// The comparisons above are worth something only if the captures hold real
	// values and the typed scans mostly succeeded somewhere.
	got, err := capture(ctx, db, `SELECT * FROM all_custom WHERE id = $1`, 1)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := got.Any[0][5].(string); !strings.Contains(s, `quoted`) || !strings.Contains(s, `(paren)`) {
		t.Errorf("all_custom.c_nested = %q", got.Any[0][5])
	}
	if v := got.Typed[0][1]["sql.NullInt64"]; v.Err != nil || v.Value != (sql.NullInt64{Int64: 7, Valid: true}) {
		t.Errorf("all_custom.c_posint into sql.NullInt64: %+v", v)
	}
	if v := got.Typed[0][3]["[]*int64"]; v.Err != nil || fmt.Sprint(derefAll(v.Value.([]*int64))) != "[1 <nil> 3]" {
		t.Errorf("all_custom.c_int_list into []*int64: %+v", v)
	}
}

func derefAll(p []*int64) []any {
	out := make([]any, len(p))
	for i, v := range p {
		if v != nil {
			out[i] = *v
		}
	}
	return out
}

// diffCapture fails t when got (or its error) differs from want.
func diffCapture(t *testing.T, label string, want, got captured, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	if diff := cmp.Diff(want, got, valueOptions); diff != "" {
		t.Errorf("%s differs from pgx (-pgx +%s):\n%s", label, label, diff)
	}
}
