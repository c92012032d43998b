package querycache_test

import (
	"bytes"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // named zones in tests must not depend on the host

	"github.com/pgcache/pgcache/querycache"
)

// mustLocation loads a zone or fails the test.
func mustLocation(tb testing.TB, name string) *time.Location {
	tb.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		tb.Fatal(err)
	}
	return loc
}

// buildResult builds a result from columns and rows through the public builder.
func buildResult(tb testing.TB, cols []querycache.Column, rows ...[]driver.Value) *querycache.Result {
	tb.Helper()
	b := querycache.NewResultBuilder(cols, querycache.Limits{MaxRows: 1 << 20, MaxBytes: 1 << 30})
	for _, r := range rows {
		if err := b.Add(r); err != nil {
			tb.Fatal(err)
		}
	}
	res, err := b.Result()
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

func textColumns(n int) []querycache.Column {
	cols := make([]querycache.Column, n)
	for i := range cols {
		cols[i] = querycache.Column{Name: fmt.Sprintf("c%d", i), TypeOID: 25, DatabaseTypeName: "TEXT",
			Length: math.MaxInt64, HasLength: true, ScanType: querycache.ScanTypeString}
	}
	return cols
}

// sameValue reports whether two driver.Values are indistinguishable to database/sql:
// same dynamic type, same bits (NaN included), same nil-ness of []byte, same
// instant, location and zone of a time.
func sameValue(a, b driver.Value) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case float64:
		bf, ok := b.(float64)
		return ok && math.Float64bits(a) == math.Float64bits(bf)
	case []byte:
		bb, ok := b.([]byte)
		return ok && (a == nil) == (bb == nil) && bytes.Equal(a, bb)
	case time.Time:
		bt, ok := b.(time.Time)
		if !ok || !a.Equal(bt) || a.Location().String() != bt.Location().String() {
			return false
		}
		an, ao := a.Zone()
		bn, bo := bt.Zone()
		return an == bn && ao == bo && (a.Location() == time.Local) == (bt.Location() == time.Local) &&
			(a.Location() == time.UTC) == (bt.Location() == time.UTC)
	default:
		return a == b
	}
}

func sameResult(tb testing.TB, want, got *querycache.Result) {
	tb.Helper()
	if got.NumRows() != want.NumRows() || got.NumColumns() != want.NumColumns() {
		tb.Fatalf("shape %dx%d, want %dx%d", got.NumRows(), got.NumColumns(), want.NumRows(), want.NumColumns())
	}
	for i := 0; i < want.NumColumns(); i++ {
		if got.Column(i) != want.Column(i) {
			tb.Errorf("column %d = %+v, want %+v", i, got.Column(i), want.Column(i))
		}
	}
	for r := 0; r < want.NumRows(); r++ {
		for c := 0; c < want.NumColumns(); c++ {
			if w, g := want.Value(r, c), got.Value(r, c); !sameValue(w, g) {
				tb.Errorf("row %d column %d = %#v (%T), want %#v (%T)", r, c, g, g, w, w)
			}
		}
	}
	if got.Size() != want.Size() {
		tb.Errorf("size %d, want %d", got.Size(), want.Size())
	}
}

func roundTrip(tb testing.TB, res *querycache.Result) *querycache.Result {
	tb.Helper()
	enc := querycache.EncodeResult(nil, res)
	got, err := querycache.DecodeResult(string(enc))
	if err != nil {
		tb.Fatalf("decode: %v", err)
	}
	sameResult(tb, res, got)
	return got
}

// everyKind is one row per kind of driver.Value pgx's stdlib produces (see
// stdlib.Rows.initValueFuncs), with the edge values of each.
func everyKind(tb testing.TB) []driver.Value {
	ny := mustLocation(tb, "America/New_York")
	return []driver.Value{
		nil,
		true, false,
		int64(0), int64(-1), int64(math.MinInt64), int64(math.MaxInt64), int64(4294967295), // oid as stdlib reports it
		0.0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), math.SmallestNonzeroFloat64, float64(float32(1.1)),
		"", "plain", "ünïcödé ✓", "infinity", "-infinity", strings.Repeat("x", 100000), "with\x00nul",
		[]byte(nil), []byte{}, []byte{0, 1, 2, 255}, []byte(`{"json": [1, 2]}`),
		time.Date(2024, 2, 29, 12, 30, 45, 123456789, time.UTC),                  // timestamp: UTC
		time.Unix(1700000000, 999999999),                                         // timestamptz: Local
		time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),                              // date
		time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC),                           // PostgreSQL's earliest date
		time.Date(294276, 12, 31, 23, 59, 59, 999999000, time.UTC),               // and latest timestamp
		time.Date(2024, 7, 4, 9, 0, 0, 0, ny),                                    // named zone
		time.Date(2024, 7, 4, 9, 0, 0, 0, time.FixedZone("+05:30", 5*3600+1800)), // fixed zone
		time.Date(2024, 7, 4, 9, 0, 0, 0, time.FixedZone("", -3600)),             // unnamed fixed zone
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),                                 // zero time
		time.Date(1969, 12, 31, 23, 59, 59, 1, time.UTC),                         // before the epoch with nanoseconds
	}
}

func TestCodecRoundTripEveryKind(t *testing.T) {
	row := everyKind(t)
	res := buildResult(t, textColumns(len(row)), row)
	got := roundTrip(t, res)
	// A decoded Local or UTC time is the same Go value, == included: what
	// database/sql and the application compare is exactly what pgx gave.
	for c, v := range row {
		if tv, ok := v.(time.Time); ok && (tv.Location() == time.UTC || tv.Location() == time.Local) {
			if got.Value(0, c) != v {
				t.Errorf("column %d: %#v != %#v", c, got.Value(0, c), v)
			}
		}
	}
}

func TestCodecColumnMetadata(t *testing.T) {
	cols := []querycache.Column{
		{Name: "id", TypeOID: 20, DatabaseTypeName: "INT8", ScanType: querycache.ScanTypeInt64},
		{Name: "price", TypeOID: 1700, DatabaseTypeName: "NUMERIC", Precision: 10, Scale: 2, HasPrecisionScale: true, ScanType: querycache.ScanTypeFloat64},
		{Name: "name", TypeOID: 1043, DatabaseTypeName: "VARCHAR", Length: 20, HasLength: true, ScanType: querycache.ScanTypeString},
		{Name: "n", DatabaseTypeName: "", Nullable: true, HasNullable: true, ScanType: querycache.ScanTypeAny},
		{Name: "odd", Nullable: false, HasNullable: true, Length: -5, HasLength: true, ScanType: querycache.ScanTypeNil},
		{Name: "", TypeOID: math.MaxUint32, ScanType: querycache.ScanTypeTime},
	}
	res := buildResult(t, cols, []driver.Value{int64(1), "1.50", "x", nil, nil, nil})
	roundTrip(t, res)
}

func TestCodecEmptyResults(t *testing.T) {
	roundTrip(t, buildResult(t, textColumns(3)))                          // no rows
	roundTrip(t, buildResult(t, nil))                                     // no columns, no rows
	roundTrip(t, buildResult(t, nil, []driver.Value{}, []driver.Value{})) // SELECT FROM t: rows without columns
}

// randomValue returns a random driver.Value of a random kind.
func randomValue(r *rand.Rand, zones []*time.Location) driver.Value {
	switch r.IntN(8) {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return int64(r.Uint64())
	case 3:
		return math.Float64frombits(r.Uint64())
	case 4:
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return string(b)
	case 5:
		if r.IntN(4) == 0 {
			return []byte(nil)
		}
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	default:
		sec := r.Int64N(2e11) - 1e11
		return time.Unix(sec, r.Int64N(1e9)).In(zones[r.IntN(len(zones))])
	}
}

func TestCodecRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	zones := []*time.Location{time.UTC, time.Local, mustLocation(t, "Europe/Paris"), mustLocation(t, "Asia/Kolkata"), time.FixedZone("X", 7200)}
	for i := 0; i < 300; i++ {
		ncols := r.IntN(12)
		rows := make([][]driver.Value, r.IntN(20))
		for j := range rows {
			rows[j] = make([]driver.Value, ncols)
			for k := range rows[j] {
				rows[j][k] = randomValue(r, zones)
			}
		}
		res := buildResult(t, textColumns(ncols), rows...)
		roundTrip(t, res)
		if t.Failed() {
			t.Fatalf("iteration %d", i)
		}
	}
}

func TestCodecRejectsDamage(t *testing.T) {
	res := buildResult(t, textColumns(len(everyKind(t))), everyKind(t))
	enc := querycache.EncodeResult(nil, res)
	for n := 0; n < len(enc); n += 1 + n/50 {
		if _, err := querycache.DecodeResult(string(enc[:n])); !errors.Is(err, querycache.ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: err = %v", n, err)
		}
	}
	for i := 0; i < len(enc); i += 1 + i/50 {
		damaged := bytes.Clone(enc)
		damaged[i] ^= 0x40
		if _, err := querycache.DecodeResult(string(damaged)); !errors.Is(err, querycache.ErrCorrupt) {
			t.Fatalf("byte %d flipped: err = %v", i, err)
		}
	}
	for _, foreign := range []string{"", "QC", "hello world", `{"json": true}`, "QC\x02" + string(enc[3:])} {
		if _, err := querycache.DecodeResult(foreign); !errors.Is(err, querycache.ErrCorrupt) {
			t.Errorf("%.20q: err = %v", foreign, err)
		}
	}
}

// FuzzDecodeResult feeds the decoder arbitrary bytes, both as they are and with a
// valid checksum appended (without it nearly every mutation would stop at the
// checksum and the parser behind it would go unexplored).
func FuzzDecodeResult(f *testing.F) {
	small := everyKind(f)
	small[20] = "long string shortened for the fuzzer"
	seeds := []*querycache.Result{
		buildResult(f, textColumns(len(small)), small),
		buildResult(f, nil),
		buildResult(f, textColumns(2), []driver.Value{int64(1), "a"}, []driver.Value{nil, []byte{}}),
	}
	for _, r := range seeds {
		enc := querycache.EncodeResult(nil, r)
		f.Add(string(enc))
		f.Add(string(enc[:len(enc)-4]))
	}
	f.Fuzz(func(t *testing.T, data string) {
		checkDecode(t, data)
		withSum := binary.LittleEndian.AppendUint32([]byte(data), crc32.Checksum([]byte(data), crc32.MakeTable(crc32.Castagnoli)))
		checkDecode(t, string(withSum))
	})
}

func checkDecode(t *testing.T, data string) {
	res, err := querycache.DecodeResult(data)
	if err != nil {
		if !errors.Is(err, querycache.ErrCorrupt) {
			t.Fatalf("error not ErrCorrupt: %v", err)
		}
		return
	}
	// Whatever decodes is a valid result: it encodes and decodes to itself, and
	// replays.
	again, err := querycache.DecodeResult(string(querycache.EncodeResult(nil, res)))
	if err != nil {
		t.Fatalf("re-decode: %v", err)
	}
	sameResult(t, res, again)
	if res.NumRows() > 10000 {
		return // rows of no columns cost no bytes: a short input can claim billions
	}
	rows := res.Rows()
	dest := make([]driver.Value, res.NumColumns())
	for rows.Next(dest) == nil {
	}
}

func BenchmarkCodec(b *testing.B) {
	cols := []querycache.Column{
		{Name: "id", TypeOID: 20, DatabaseTypeName: "INT8", ScanType: querycache.ScanTypeInt64},
		{Name: "name", TypeOID: 25, DatabaseTypeName: "TEXT", Length: math.MaxInt64, HasLength: true, ScanType: querycache.ScanTypeString},
		{Name: "score", TypeOID: 701, DatabaseTypeName: "FLOAT8", ScanType: querycache.ScanTypeFloat64},
		{Name: "active", TypeOID: 16, DatabaseTypeName: "BOOL", ScanType: querycache.ScanTypeBool},
		{Name: "created", TypeOID: 1184, DatabaseTypeName: "TIMESTAMPTZ", ScanType: querycache.ScanTypeTime},
	}
	res := buildResult(b, cols, []driver.Value{int64(42), "alice", 3.5, true, time.Unix(1700000000, 0)})
	enc := string(querycache.EncodeResult(nil, res))
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 256)
		for b.Loop() {
			buf = querycache.EncodeResult(buf[:0], res)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := querycache.DecodeResult(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
