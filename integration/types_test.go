package integration_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// typesSchema has a column of every type the driver must handle like pgx, with a
// row of ordinary values, a row of NULLs and a row of edge values.
var typesSchema = []string{
	`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
	`CREATE TABLE all_types (
		id          int PRIMARY KEY,
		c_int2      int2,
		c_int4      int4,
		c_int8      int8,
		c_numeric   numeric(12,3),
		c_decimal   numeric,
		c_float4    float4,
		c_float8    float8,
		c_text      text,
		c_varchar   varchar(20),
		c_bytea     bytea,
		c_bool      bool,
		c_date      date,
		c_timestamp timestamp,
		c_timestamptz timestamptz,
		c_interval  interval,
		c_uuid      uuid,
		c_json      json,
		c_jsonb     jsonb,
		c_int_array int4[],
		c_text_array text[],
		c_mood      mood NOT NULL DEFAULT 'ok'
	)`,
	`INSERT INTO all_types VALUES
		(1, 12, 1234, 123456789012, 12345.678, 3.14159265358979323846264338327950288, 1.5, 2.25,
		 'text é ☃', 'varchar', '\x00ff10', true, '2024-02-29', '2024-02-29 13:14:15.123456',
		 '2024-02-29 13:14:15.123456+02', '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		 '{"b": 1, "a": [true, null]}', '{"b": 1, "a": [true, null]}', '{1,2,NULL,4}', '{"a","b c",NULL,""}', 'happy'),
		(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'sad'),
		(3, -32768, -2147483648, 9223372036854775807, -0.001, 'NaN', '-Infinity', 'NaN',
		 '', '', '', false, '0001-01-01', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '-1 days -00:00:01', '00000000-0000-0000-0000-000000000000',
		 'null', '[]', '{}', '{}', 'ok')`,
}

const allTypesQuery = `SELECT * FROM all_types ORDER BY id`

// TestTypesScanAny scans every column into any, as an application that does not know
// the types (or an ORM) does.
func TestTypesScanAny(t *testing.T) {
	t.Parallel()
	e := newEnv(t, typesSchema...)
	got, err := compare(t, e, check[[][]any]{work: func(ctx context.Context, db *sql.DB) ([][]any, error) {
		return queryAny(ctx, db, allTypesQuery)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || len(got[0]) != 22 {
		t.Fatalf("got %d rows of %d columns, want 3 of 22", len(got), len(got[0]))
	}
	for i, v := range got[1][1:21] {
		if v != nil {
			t.Errorf("row 2 column %d = %v, want NULL", i+2, v)
		}
	}
}

// queryAny returns every row of a query with each column scanned into any.
func queryAny(ctx context.Context, db *sql.DB, query string, args ...any) ([][]any, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return out, err
		}
		out = append(out, vals)
	}
	return out, rows.Err()
}

// typedRow holds all_types in the Go types an application would choose; pointers
// take the NULLs.
type typedRow struct {
	ID           int
	Int2         *int16
	Int4         *int32
	Int8         *int64
	Numeric      *string
	Decimal      pgtype.Numeric
	Float4       *float32
	Float8       *float64
	Text         *string
	Varchar      sql.NullString
	Bytea        []byte
	Bool         sql.NullBool
	Date         *time.Time
	Timestamp    sql.NullTime
	Timestamptz  *time.Time
	Interval     pgtype.Interval
	UUID         pgtype.UUID
	JSON         []byte
	JSONB        *json.RawMessage
	IntArray     []*int32
	TextArray    []pgtype.Text
	Mood         string
	NumericFloat *float64 // numeric scanned into a float too
}

// TestTypesScanTyped scans every column into typed destinations: database/sql's
// conversions, pgtype's sql.Scanner types and pgx's array scanner.
func TestTypesScanTyped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, typesSchema...)
	got, err := compare(t, e, check[[]typedRow]{work: func(ctx context.Context, db *sql.DB) ([]typedRow, error) {
		rows, err := db.QueryContext(ctx, `SELECT *, c_numeric FROM all_types WHERE id < 3 ORDER BY id`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		m := pgtype.NewMap()
		var out []typedRow
		for rows.Next() {
			var r typedRow
			if err := rows.Scan(&r.ID, &r.Int2, &r.Int4, &r.Int8, &r.Numeric, &r.Decimal, &r.Float4, &r.Float8,
				&r.Text, &r.Varchar, &r.Bytea, &r.Bool, &r.Date, &r.Timestamp, &r.Timestamptz, &r.Interval,
				&r.UUID, &r.JSON, &r.JSONB, m.SQLScanner(&r.IntArray), m.SQLScanner(&r.TextArray), &r.Mood,
				&r.NumericFloat); err != nil {
				return out, err
			}
			out = append(out, r)
		}
		return out, rows.Err()
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d rows, want 2", len(got))
	}
	r := got[0]
	if *r.Int8 != 123456789012 || *r.Numeric != "12345.678" || *r.NumericFloat != 12345.678 ||
		*r.Text != "text é ☃" || !r.Bool.Bool || r.Mood != "happy" || len(r.IntArray) != 4 || r.IntArray[2] != nil {
		t.Errorf("row 1 scanned wrong: %+v", r)
	}
	if got[1].Int2 != nil || got[1].Bytea != nil || got[1].Timestamp.Valid || got[1].Decimal.Valid || got[1].IntArray != nil {
		t.Errorf("row 2 NULLs scanned wrong: %+v", got[1])
	}
}

// TestTypesScanErrors compares the errors of scans that cannot succeed: NULL into a
// non-pointer, NaN and infinities into types without them, text into a number.
func TestTypesScanErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, typesSchema...)
	scans := []struct {
		name, query string
		dest        func() any
	}{
		{"NULL into int64", `SELECT c_int8 FROM all_types WHERE id = 2`, func() any { return new(int64) }},
		{"NULL into string", `SELECT c_text FROM all_types WHERE id = 2`, func() any { return new(string) }},
		{"text into int", `SELECT c_text FROM all_types WHERE id = 1`, func() any { return new(int) }},
		{"int8 overflowing int16", `SELECT c_int8 FROM all_types WHERE id = 1`, func() any { return new(int16) }},
		{"NaN numeric into float", `SELECT c_decimal FROM all_types WHERE id = 3`, func() any { return new(float64) }},
		{"infinite date into time", `SELECT 'infinity'::date`, func() any { return new(time.Time) }},
		{"infinite timestamptz into any", `SELECT '-infinity'::timestamptz`, func() any { return new(any) }},
		{"no rows", `SELECT c_int8 FROM all_types WHERE id = 42`, func() any { return new(int64) }},
	}
	for _, sc := range scans {
		t.Run(sc.name, func(t *testing.T) {
			compare(t, e, check[any]{work: func(ctx context.Context, db *sql.DB) (any, error) {
				dest := sc.dest()
				err := db.QueryRowContext(ctx, sc.query).Scan(dest)
				return reflect.ValueOf(dest).Elem().Interface(), err
			}})
		})
	}
}

// TestTypesArguments sends every type as a query argument, from the Go types an
// application would use, and reads it back.
func TestTypesArguments(t *testing.T) {
	t.Parallel()
	e := newEnv(t, typesSchema...)
	when := time.Date(2024, 2, 29, 13, 14, 15, 123456000, time.FixedZone("CET", 3600))
	args := []any{
		int16(-7), int32(1 << 30), int64(-1 << 62), "12345.678", 3.25, float32(1.5), 0.1,
		"text é", "varchar", []byte{0, 1, 255}, true, when, when, when,
		"1 day 02:00:00", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", []byte(`{"k": [1, 2]}`), `{"k": "v"}`,
		[]int32{1, 2, 3}, []string{"x", "y z"}, "sad", nil, sql.NullInt64{},
	}
	query := `SELECT $1::int2, $2::int4, $3::int8, $4::numeric, $5::numeric, $6::float4, $7::float8,
		$8::text, $9::varchar, $10::bytea, $11::bool, $12::date, $13::timestamp, $14::timestamptz,
		$15::interval, $16::uuid, $17::json, $18::jsonb, $19::int4[], $20::text[], $21::mood, $22::text, $23::int8`
	got, err := compare(t, e, check[[][]any]{work: func(ctx context.Context, db *sql.DB) ([][]any, error) {
		return queryAny(ctx, db, query, args...)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0][0] != int64(-7) || got[0][20] != "sad" || got[0][21] != nil {
		t.Errorf("arguments came back wrong: %v", got)
	}

	// Arguments the server or pgx refuses fail alike.
	bad := []struct {
		name, query string
		arg         any
	}{
		{"text into int4", `SELECT $1::int4`, "twelve"},
		{"unknown enum label", `SELECT $1::mood`, "angry"},
		{"int overflowing int2", `SELECT $1::int2`, int64(1 << 20)},
		{"unsupported Go type", `SELECT $1::text`, struct{ A chan int }{}},
		{"wrong argument count", `SELECT $1::int4, $2::int4`, 1},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := compare(t, e, check[[][]any]{work: func(ctx context.Context, db *sql.DB) ([][]any, error) {
				return queryAny(ctx, db, b.query, b.arg)
			}})
			if err == nil {
				t.Errorf("%s: no error", b.name)
			}
		})
	}
}

// columnMeta is what rows.ColumnTypes tells about a column; ScanType as its name.
type columnMeta struct {
	Name, DatabaseTypeName, ScanType string
	Length                           int64
	HasLength                        bool
	Precision, Scale                 int64
	HasDecimalSize                   bool
	Nullable, HasNullable            bool
}

// TestColumnTypes compares the column metadata of every type, of a table and of
// expressions.
func TestColumnTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, typesSchema...)
	const expressions = `SELECT 1 AS one, 'x'::varchar(7) AS v, 1.5::numeric(5,2) AS n, NULL AS nothing, now()`
	for _, query := range []string{allTypesQuery, expressions, `SELECT * FROM all_types WHERE false`} {
		got, err := compare(t, e, check[[]columnMeta]{work: func(ctx context.Context, db *sql.DB) ([]columnMeta, error) {
			rows, err := db.QueryContext(ctx, query)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			types, err := rows.ColumnTypes()
			if err != nil {
				return nil, err
			}
			out := make([]columnMeta, len(types))
			for i, ct := range types {
				m := columnMeta{Name: ct.Name(), DatabaseTypeName: ct.DatabaseTypeName(), ScanType: ct.ScanType().String()}
				m.Length, m.HasLength = ct.Length()
				m.Precision, m.Scale, m.HasDecimalSize = ct.DecimalSize()
				m.Nullable, m.HasNullable = ct.Nullable()
				out[i] = m
			}
			return out, rows.Close()
		}})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || got[0].Name == "" || got[0].DatabaseTypeName == "" {
			t.Errorf("%s: metadata missing: %+v", query, got)
		}
		if query == expressions {
			if v := got[1]; v.DatabaseTypeName != "VARCHAR" || v.Length != 7 || !v.HasLength {
				t.Errorf("varchar(7) metadata: %+v", v)
			}
			if n := got[2]; n.DatabaseTypeName != "NUMERIC" || n.Precision != 5 || n.Scale != 2 || !n.HasDecimalSize {
				t.Errorf("numeric(5,2) metadata: %+v", n)
			}
		}
	}
}
