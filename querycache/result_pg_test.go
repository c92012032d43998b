package querycache_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/pgcache/pgcache/pgcachetest"
	"github.com/pgcache/pgcache/querycache"
)

// fidelityQueries cover every type the driver's stdlib maps specially, the ones it
// passes through as text (arrays, composites, enums, domains, ranges...), NULLs, and
// the values pgx reports in a form of their own (infinite timestamps).
var fidelityQueries = map[string]string{
	"scalars": `SELECT 1::int2 AS i2, 2::int4 AS i4, 3::int8 AS i8, 1.5::float4 AS f4, 2.25::float8 AS f8,
		'NaN'::float8 AS nan, '-Infinity'::float8 AS ninf, 12.345::numeric(10,3) AS num, 1e-20::numeric AS bignum,
		'text'::text AS t, 'vc'::varchar(20) AS vc, 'bp'::char(5) AS bp, 'x'::"char" AS ch, true AS b, 'f'::bool AS b2,
		'\x00ff'::bytea AS ba, ''::bytea AS empty_ba, ''::text AS empty_t,
		1234::oid AS o, '10.0.0.1/8'::inet AS inet, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u,
		'1 day 02:03:04'::interval AS iv, '12:34:56.789'::time AS tm, B'1011'::varbit AS vb, 'x'::xml AS x`,
	"times": `SELECT '2024-01-02'::date AS d, '2024-01-02 03:04:05.123456'::timestamp AS ts,
		'2024-01-02 03:04:05.123456+02'::timestamptz AS tstz, 'infinity'::timestamp AS ts_inf,
		'-infinity'::timestamptz AS tstz_ninf, 'infinity'::date AS d_inf, '4713-01-01 BC'::date AS d_min,
		'294276-12-31 23:59:59.999999'::timestamp AS ts_max, '1969-12-31 23:59:59.5+00'::timestamptz AS before_epoch`,
	"empty bytea first": `SELECT ''::bytea AS e, '\x01'::bytea AS one`,
	"json":              `SELECT '{"a": 1}'::json AS j, '{"b": [1, 2]}'::jsonb AS jb, 'null'::jsonb AS jnull, '"s"'::json AS js`,
	"composite": `SELECT ARRAY[1, 2, NULL]::int[] AS ia, ARRAY['a', 'b c', NULL]::text[] AS ta, '{}'::int[] AS empty,
		ROW(1, 'x')::pair AS p, 'happy'::mood AS m, 5::posint AS dom, int4range(1, 10) AS r,
		ARRAY[ROW(2, 'y')::pair] AS pa, ARRAY['2024-01-01'::date] AS da`,
	"nulls": `SELECT NULL::text AS t, NULL::int AS i, NULL::bytea AS ba, NULL::timestamptz AS ts, NULL::bool AS b,
		NULL::jsonb AS j, NULL::numeric AS n, NULL::int[] AS a, NULL::pair AS p, NULL AS unknown`,
	"rows": `SELECT g AS id, 'name ' || g AS name, CASE WHEN g % 2 = 0 THEN NULL ELSE g * 1.5 END AS half,
		g % 3 = 0 AS third, '2024-06-01 12:00:00+00'::timestamptz - g * interval '1 hour' AS at FROM generate_series(1, 50) g`,
	"no rows":    `SELECT 1 AS one WHERE false`,
	"no columns": `SELECT FROM generate_series(1, 3)`,
}

// TestFidelityWithPostgres runs each query through pgx's stdlib on PostgreSQL,
// records its driver.Rows the way the driver will (ColumnsOf, ResultBuilder), sends
// the Result through the codec, replays it through database/sql, and compares what
// the application sees, column by column and value by value, scanning into *any
// and into *string.
func TestFidelityWithPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	for _, ddl := range []string{
		`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
		`CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)`,
		`CREATE TYPE pair AS (a int, b text)`,
	} {
		if _, err := db.ExecContext(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	replayDB := openReplay(t)
	for name, query := range fidelityQueries {
		t.Run(name, func(t *testing.T) {
			res := record(ctx, t, db, query)
			decoded, err := querycache.DecodeResult(string(querycache.EncodeResult(nil, res)))
			if err != nil {
				t.Fatal(err)
			}
			registerRows(t, query, func() driver.Rows { return decoded.Rows() })
			for _, scanInto := range []string{"any", "string"} {
				want := scanAll(ctx, t, db, query, scanInto)
				got := scanAll(ctx, t, replayDB, query, scanInto)
				if !reflect.DeepEqual(got.types, want.types) {
					t.Errorf("column types:\n got %+v\nwant %+v", got.types, want.types)
				}
				if len(got.rows) != len(want.rows) {
					t.Fatalf("%d rows, want %d", len(got.rows), len(want.rows))
				}
				for r := range want.rows {
					for c := range want.rows[r] {
						// sameValue: NaN equals itself, []byte nil-ness and time zones count.
						if g, w := got.rows[r][c], want.rows[r][c]; !sameValue(w, g) {
							t.Errorf("row %d column %s scanned into %s: got %#v (%T), want %#v (%T)",
								r, want.types[c].Name, scanInto, g, g, w, w)
						}
					}
				}
			}
		})
	}
}

// record runs query on pgx's stdlib driver and builds the Result the driver would
// cache.
func record(ctx context.Context, t *testing.T, db *sql.DB, query string) *querycache.Result {
	t.Helper()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var res *querycache.Result
	err = conn.Raw(func(dc any) error {
		rows, err := dc.(driver.QueryerContext).QueryContext(ctx, query, nil)
		if err != nil {
			return err
		}
		defer rows.Close()
		cols, err := querycache.ColumnsOf(rows)
		if err != nil {
			return err
		}
		b := querycache.NewResultBuilder(cols, querycache.Limits{})
		dest := make([]driver.Value, len(cols))
		for {
			err := rows.Next(dest)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if err := b.Add(dest); err != nil {
				return err
			}
		}
		res, err = b.Result()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

type columnType struct {
	Name, DatabaseType string
	Length             int64
	HasLength          bool
	Precision, Scale   int64
	HasDecimal         bool
	Nullable           bool
	HasNullable        bool
	ScanType           reflect.Type
}

type scanned struct {
	types []columnType
	rows  [][]any
}

// scanAll reads every row of query through database/sql into destinations of one
// kind: *any (the driver.Value itself, after database/sql's copying) or *string
// (database/sql's conversion of it; NULLs as a marker).
func scanAll(ctx context.Context, t *testing.T, db *sql.DB, query, into string) scanned {
	t.Helper()
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cts, err := rows.ColumnTypes()
	if err != nil {
		t.Fatal(err)
	}
	var out scanned
	for _, ct := range cts {
		c := columnType{Name: ct.Name(), DatabaseType: ct.DatabaseTypeName(), ScanType: ct.ScanType()}
		c.Length, c.HasLength = ct.Length()
		c.Precision, c.Scale, c.HasDecimal = ct.DecimalSize()
		c.Nullable, c.HasNullable = ct.Nullable()
		out.types = append(out.types, c)
	}
	for rows.Next() {
		row := make([]any, len(cts))
		ptrs := make([]any, len(cts))
		strs := make([]sql.NullString, len(cts))
		for i := range row {
			if into == "any" {
				ptrs[i] = &row[i]
			} else {
				ptrs[i] = &strs[i]
			}
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		if into == "string" {
			for i, s := range strs {
				row[i] = s
			}
		}
		out.rows = append(out.rows, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
