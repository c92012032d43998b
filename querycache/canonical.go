package querycache

import (
	"database/sql/driver"
	"encoding/hex"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// ValueClass is how a column's values are canonicalized for row tags. Only types whose
// PostgreSQL equality is byte equality of one canonical form have a class; every
// other type (floating point, citext, json, bpchar, name, text under a
// nondeterministic collation, unknown types) is ClassNone, and predicates on such
// columns fall back to the relation-wide tag.
type ValueClass uint8

const (
	ClassNone        ValueClass = iota // no precise tags
	ClassInt                           // int2, int4, int8, oid: decimal
	ClassBool                          // bool: t or f
	ClassText                          // text, varchar under a deterministic collation: the bytes
	ClassUUID                          // uuid: lower-case 8-4-4-4-12 hex
	ClassDate                          // date: YYYY-MM-DD
	ClassTimestamp                     // timestamp: YYYY-MM-DD HH:MM:SS[.ffffff] (wall clock)
	ClassTimestamptz                   // timestamptz: the instant, as UTC YYYY-MM-DD HH:MM:SS[.ffffff]Z
	ClassBytea                         // bytea: the bytes
	ClassNumeric                       // numeric: normalized decimal (1.0 and 1.00 are 1), NaN, Infinity
	ClassEnum                          // enums: the label

	numClasses // keep last
)

var classNames = [numClasses]string{"none", "int", "bool", "text", "uuid", "date", "timestamp", "timestamptz", "bytea", "numeric", "enum"}

func (c ValueClass) String() string {
	if c < numClasses {
		return classNames[c]
	}
	return "invalid"
}

// Built-in type OIDs with a value class (pg_type.dat; fixed across versions).
const (
	oidBool        = 16
	oidBytea       = 17
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidVarchar     = 1043
	oidDate        = 1082
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidNumeric     = 1700
	oidUUID        = 2950
)

// ClassOf returns the value class of a built-in type OID, ClassNone for any other
// (enums and domains have catalog-assigned OIDs: the analyzer classifies them from
// the catalog and records the class in each Scheme's columns). For ClassText the
// caller must also know that the column's collation is deterministic.
func ClassOf(typeOID uint32) ValueClass {
	switch typeOID {
	case oidInt2, oidInt4, oidInt8, oidOID:
		return ClassInt
	case oidBool:
		return ClassBool
	case oidText, oidVarchar:
		return ClassText
	case oidUUID:
		return ClassUUID
	case oidDate:
		return ClassDate
	case oidTimestamp:
		return ClassTimestamp
	case oidTimestamptz:
		return ClassTimestamptz
	case oidBytea:
		return ClassBytea
	case oidNumeric:
		return ClassNumeric
	}
	return ClassNone
}

// Canonical is one value in canonical form: the same bytes whether it came from a Go
// argument (CanonicalArg) or from PostgreSQL's text output of the column
// (CanonicalText). NULL has its own form, NullCanonical, distinct from every value.
type Canonical string

// NullCanonical is the canonical form of SQL NULL.
const NullCanonical Canonical = "n"

// valuePrefix starts every non-NULL canonical value, so NULL can never collide.
const valuePrefix = "v"

func canon(s string) Canonical { return Canonical(valuePrefix + s) }

// IsNull reports whether c is the canonical NULL.
func (c Canonical) IsNull() bool { return c == NullCanonical }

// String returns the value for people: NULL, or the canonical text.
func (c Canonical) String() string {
	if c.IsNull() || len(c) == 0 {
		return "NULL"
	}
	return string(c[1:])
}

// CanonicalArg canonicalizes a statement argument bound to a column of class c, as
// database/sql passes it to the driver (int64, float64, bool, []byte, string,
// time.Time, nil) or as pgx accepts it natively (other integer widths, pointers,
// [16]byte UUIDs, driver.Valuer such as pgtype values). It reports false whenever the
// value cannot be canonicalized with certainty for that class; the caller must then
// use the relation-wide tag, never a guess.
func CanonicalArg(c ValueClass, v any) (Canonical, bool) {
	return canonicalArg(c, v, 0)
}

func canonicalArg(c ValueClass, v any, depth int) (Canonical, bool) {
	if depth > 4 {
		return "", false
	}
	switch x := v.(type) {
	case nil:
		return NullCanonical, true
	case string:
		return canonicalString(c, x)
	case []byte:
		switch c {
		case ClassText, ClassBytea:
			// Not ClassEnum: pgx sends []byte to an enum parameter as bytea
			// text ("\x6f6b"), which is not the label.
			if x == nil {
				return NullCanonical, true
			}
			return canon(string(x)), true
		}
		return "", false
	case int64:
		return canonicalInt(c, x)
	case int:
		return canonicalInt(c, int64(x))
	case int32:
		return canonicalInt(c, int64(x))
	case int16:
		return canonicalInt(c, int64(x))
	case int8:
		return canonicalInt(c, int64(x))
	case uint8:
		return canonicalInt(c, int64(x))
	case uint16:
		return canonicalInt(c, int64(x))
	case uint32:
		return canonicalInt(c, int64(x))
	case uint64:
		if x > math.MaxInt64 {
			return "", false
		}
		return canonicalInt(c, int64(x))
	case uint:
		if uint64(x) > math.MaxInt64 {
			return "", false
		}
		return canonicalInt(c, int64(x))
	case float64:
		return canonicalFloat(c, x)
	case float32:
		return canonicalFloat(c, float64(x))
	case bool:
		if c != ClassBool {
			return "", false
		}
		if x {
			return canon("t"), true
		}
		return canon("f"), true
	case time.Time:
		return canonicalTime(c, x)
	case [16]byte:
		if c != ClassUUID {
			return "", false
		}
		return canon(formatUUID(x)), true
	case driver.Valuer:
		rv := reflect.ValueOf(x)
		if rv.Kind() == reflect.Pointer && rv.IsNil() {
			return NullCanonical, true
		}
		val, err := x.Value()
		if err != nil {
			return "", false
		}
		return canonicalArg(c, val, depth+1)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return NullCanonical, true
		}
		return canonicalArg(c, rv.Elem().Interface(), depth+1)
	case reflect.Array:
		// Named [16]byte types (github.com/google/uuid.UUID without its Valuer, and
		// the like) are UUIDs to pgx.
		if c == ClassUUID && rv.Len() == 16 && rv.Type().Elem().Kind() == reflect.Uint8 {
			var u [16]byte
			reflect.Copy(reflect.ValueOf(&u).Elem(), rv)
			return canon(formatUUID(u)), true
		}
	case reflect.String:
		return canonicalString(c, rv.String())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return canonicalInt(c, rv.Int())
	case reflect.Bool:
		return canonicalArg(c, rv.Bool(), depth+1)
	}
	return "", false
}

func canonicalInt(c ValueClass, x int64) (Canonical, bool) {
	switch c {
	case ClassInt, ClassNumeric:
		return canon(strconv.FormatInt(x, 10)), true
	}
	return "", false
}

func canonicalFloat(c ValueClass, f float64) (Canonical, bool) {
	switch c {
	case ClassInt:
		// pgx sends an integral float to an integer parameter as that integer.
		if f != math.Trunc(f) || math.IsInf(f, 0) || math.Abs(f) >= 1<<63 {
			return "", false
		}
		return canon(strconv.FormatInt(int64(f), 10)), true
	case ClassNumeric:
		switch {
		case math.IsNaN(f):
			return canon("NaN"), true
		case math.IsInf(f, 1):
			return canon("Infinity"), true
		case math.IsInf(f, -1):
			return canon("-Infinity"), true
		}
		// pgx encodes a float64 numeric argument from this exact text.
		n, ok := normalizeNumeric(strconv.FormatFloat(f, 'f', -1, 64))
		if !ok {
			return "", false
		}
		return canon(n), true
	}
	return "", false
}

func canonicalTime(c ValueClass, t time.Time) (Canonical, bool) {
	switch c {
	case ClassDate:
		// pgx sends the date of t's wall clock in t's location.
		return canon(formatDate(t.Year(), int(t.Month()), t.Day())), true
	case ClassTimestamp:
		// pgx discards the location and sends the wall clock.
		wall := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
		return canonicalMicros(wall.Unix()*1_000_000+int64(wall.Nanosecond())/1000, "")
	case ClassTimestamptz:
		return canonicalMicros(t.Unix()*1_000_000+int64(t.Nanosecond())/1000, "Z")
	}
	return "", false
}

// canonicalMicros formats microseconds since the Unix epoch (UTC) as
// YYYY-MM-DD HH:MM:SS[.ffffff] with trailing zeros of the fraction removed.
func canonicalMicros(us int64, suffix string) (Canonical, bool) {
	sec, frac := us/1_000_000, us%1_000_000
	if frac < 0 {
		sec--
		frac += 1_000_000
	}
	t := time.Unix(sec, 0).UTC()
	if t.Year() < 1 || t.Year() > 9999 {
		return "", false // BC and five-digit years: not worth a second format
	}
	b := make([]byte, 0, 32)
	b = append(b, formatDate(t.Year(), int(t.Month()), t.Day())...)
	b = append(b, ' ')
	b = appendTwo(b, t.Hour())
	b = append(b, ':')
	b = appendTwo(b, t.Minute())
	b = append(b, ':')
	b = appendTwo(b, t.Second())
	if frac != 0 {
		f := strconv.FormatInt(frac+1_000_000, 10)[1:]
		b = append(b, '.')
		b = append(b, strings.TrimRight(f, "0")...)
	}
	b = append(b, suffix...)
	return canon(string(b)), true
}

func appendTwo(b []byte, n int) []byte { return append(b, byte('0'+n/10), byte('0'+n%10)) }

func formatDate(y, m, d int) string {
	b := make([]byte, 0, 10)
	b = strconv.AppendInt(b, int64(y+10000), 10)[1:] // zero-padded to 4 digits for 1..9999
	b = append(b, '-')
	b = appendTwo(b, m)
	b = append(b, '-')
	b = appendTwo(b, d)
	return string(b)
}

func formatUUID(u [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// canonicalString canonicalizes a Go string argument, which pgx sends in text format
// for the server's input function to parse. Only unambiguous spellings are accepted.
func canonicalString(c ValueClass, s string) (Canonical, bool) {
	switch c {
	case ClassText, ClassEnum:
		return canon(s), true
	case ClassBytea:
		return "", false // the server would parse it as bytea input syntax
	}
	return CanonicalText(c, s)
}

// CanonicalText canonicalizes PostgreSQL's text output of a column of class c, as the
// pgoutput plugin sends it (the walsender's output functions, with DateStyle ISO and
// bytea_output hex, the defaults). It reports false for text it does not parse with
// certainty; the caller must then treat the value as unknown.
func CanonicalText(c ValueClass, s string) (Canonical, bool) {
	switch c {
	case ClassInt:
		if !isCanonicalInt(s) {
			return "", false
		}
		return canon(s), true
	case ClassBool:
		switch s {
		case "t", "true":
			return canon("t"), true
		case "f", "false":
			return canon("f"), true
		}
		return "", false
	case ClassText, ClassEnum:
		return canon(s), true
	case ClassUUID:
		u, ok := parseUUID(s)
		if !ok {
			return "", false
		}
		return canon(formatUUID(u)), true
	case ClassDate:
		y, m, d, ok := parseISODate(s)
		if !ok || len(s) != 10 {
			return "", false
		}
		return canon(formatDate(y, m, d)), true
	case ClassTimestamp:
		us, ok := parseISOTimestamp(s, false)
		if !ok {
			return "", false
		}
		return canonicalMicros(us, "")
	case ClassTimestamptz:
		us, ok := parseISOTimestamp(s, true)
		if !ok {
			return "", false
		}
		return canonicalMicros(us, "Z")
	case ClassBytea:
		if !strings.HasPrefix(s, `\x`) {
			return "", false
		}
		b, err := hex.DecodeString(s[2:])
		if err != nil {
			return "", false
		}
		return canon(string(b)), true
	case ClassNumeric:
		n, ok := normalizeNumeric(s)
		if !ok {
			return "", false
		}
		return canon(n), true
	}
	return "", false
}

func isCanonicalInt(s string) bool {
	d := strings.TrimPrefix(s, "-")
	if d == "" || len(d) > 20 || (d[0] == '0' && len(d) > 1) || (s[0] == '-' && d == "0") {
		return false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return false
		}
	}
	return true
}

func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) >= 2 && s[0] == '{' && s[len(s)-1] == '}' {
		s = s[1 : len(s)-1]
	}
	var hexDigits [32]byte
	n := 0
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch == '-' {
			// PostgreSQL accepts a hyphen after any group of four digits.
			if n == 0 || n%4 != 0 || i+1 == len(s) || s[i+1] == '-' {
				return u, false
			}
			continue
		}
		if n == 32 {
			return u, false
		}
		hexDigits[n] = ch
		n++
	}
	if n != 32 {
		return u, false
	}
	if _, err := hex.Decode(u[:], hexDigits[:]); err != nil {
		return u, false
	}
	return u, true
}

func parseDigits(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// parseISODate parses the YYYY-MM-DD prefix of s and checks that the date exists.
func parseISODate(s string) (y, m, d int, ok bool) {
	if len(s) < 10 || s[4] != '-' || s[7] != '-' {
		return 0, 0, 0, false
	}
	y, ok1 := parseDigits(s[0:4])
	m, ok2 := parseDigits(s[5:7])
	d, ok3 := parseDigits(s[8:10])
	if !ok1 || !ok2 || !ok3 || y < 1 || m < 1 || m > 12 || d < 1 {
		return 0, 0, 0, false
	}
	if t := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC); t.Day() != d {
		return 0, 0, 0, false
	}
	return y, m, d, true
}

// parseISOTimestamp parses YYYY-MM-DD{ |T}HH:MM:SS[.f{1,6}] and, when zoned, a
// mandatory numeric offset (+HH, +HH:MM or +HH:MM:SS, or Z) into microseconds since
// the Unix epoch (UTC). Unzoned text is read as UTC wall clock.
func parseISOTimestamp(s string, zoned bool) (int64, bool) {
	y, mo, d, ok := parseISODate(s)
	if !ok || len(s) < 19 || (s[10] != ' ' && s[10] != 'T') || s[13] != ':' || s[16] != ':' {
		return 0, false
	}
	h, ok1 := parseDigits(s[11:13])
	mi, ok2 := parseDigits(s[14:16])
	sec, ok3 := parseDigits(s[17:19])
	if !ok1 || !ok2 || !ok3 || h > 23 || mi > 59 || sec > 59 {
		return 0, false
	}
	rest := s[19:]
	micros := 0
	if strings.HasPrefix(rest, ".") {
		end := 1
		for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
			end++
		}
		frac := rest[1:end]
		if frac == "" || len(frac) > 6 {
			return 0, false // more than microseconds: the server would round
		}
		f, _ := parseDigits(frac)
		for i := len(frac); i < 6; i++ {
			f *= 10
		}
		micros = f
		rest = rest[end:]
	}
	offset := 0
	if zoned {
		switch {
		case rest == "Z":
		case len(rest) >= 3 && (rest[0] == '+' || rest[0] == '-'):
			parts := strings.Split(rest[1:], ":")
			if len(parts) > 3 {
				return 0, false
			}
			mult := 3600
			for _, p := range parts {
				if len(p) != 2 {
					return 0, false
				}
				n, ok := parseDigits(p)
				if !ok {
					return 0, false
				}
				offset += n * mult
				mult /= 60
			}
			if rest[0] == '-' {
				offset = -offset
			}
		default:
			return 0, false
		}
	} else if rest != "" {
		return 0, false
	}
	t := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC)
	return (t.Unix()-int64(offset))*1_000_000 + int64(micros), true
}

// maxNumericExponent bounds the exponent accepted in numeric text, so a hostile
// "1e1000000" cannot make a megabyte of zeros.
const maxNumericExponent = 1000

// normalizeNumeric returns the canonical form of numeric text: no leading zeros, no
// trailing fractional zeros, no exponent, no sign on zero; NaN, Infinity and
// -Infinity spelled so. It accepts what numeric_in accepts, without surrounding
// spaces or underscores.
func normalizeNumeric(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "nan":
		return "NaN", true
	case "infinity", "+infinity", "inf", "+inf":
		return "Infinity", true
	case "-infinity", "-inf":
		return "-Infinity", true
	}
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		e := s[i+1:]
		eneg := false
		if e != "" && (e[0] == '+' || e[0] == '-') {
			eneg = e[0] == '-'
			e = e[1:]
		}
		if len(e) > 6 {
			return "", false
		}
		n, ok := parseDigits(e)
		if !ok || n > maxNumericExponent {
			return "", false
		}
		exp = n
		if eneg {
			exp = -n
		}
	}
	intPart, fracPart, hasDot := strings.Cut(mant, ".")
	if intPart == "" && fracPart == "" {
		return "", false
	}
	if hasDot && strings.Contains(fracPart, ".") {
		return "", false
	}
	for _, part := range [2]string{intPart, fracPart} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return "", false
			}
		}
	}
	// The value is 0.digits × 10^point.
	digits := intPart + fracPart
	point := len(intPart) + exp
	lead := 0
	for lead < len(digits) && digits[lead] == '0' {
		lead++
	}
	digits = digits[lead:]
	point -= lead
	digits = strings.TrimRight(digits, "0")
	if digits == "" {
		return "0", true
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	switch {
	case point <= 0:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", -point))
		b.WriteString(digits)
	case point >= len(digits):
		b.WriteString(digits)
		b.WriteString(strings.Repeat("0", point-len(digits)))
	default:
		b.WriteString(digits[:point])
		b.WriteByte('.')
		b.WriteString(digits[point:])
	}
	return b.String(), true
}
