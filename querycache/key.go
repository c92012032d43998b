package querycache

import (
	"database/sql/driver"
	"encoding/binary"
	"encoding/hex"
	"math"
	"reflect"
	"time"
	"unsafe"

	"github.com/zeebo/xxh3"
)

// Key identifies a cached result: a 128-bit hash over everything that decides it
// other than the data. Two databases, roles, search_paths or settings never share a
// key, and arguments are hashed with their types, so 1 as an integer and '1' as text
// are different arguments.
type Key [16]byte

// String returns the key in hex, 32 characters: the form the stores take.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// keyVersion changes whenever the encoding below does, so keys of an older encoding
// are never read as keys of this one.
const keyVersion = 1

// isText reports whether pgx sends v as text (or NULL): a string, a named string
// type, or a pointer to or a driver.Valuer of one.
func isText(v any) bool {
	for depth := 0; depth < 4; depth++ {
		switch x := v.(type) {
		case nil, string:
			return true
		case driver.Valuer:
			rv := reflect.ValueOf(x)
			if rv.Kind() == reflect.Pointer && rv.IsNil() {
				return true
			}
			val, err := x.Value()
			if err != nil {
				return false
			}
			v = val
			continue
		}
		rv := reflect.ValueOf(v)
		switch rv.Kind() {
		case reflect.String:
			return true
		case reflect.Pointer:
			if rv.IsNil() {
				return true
			}
			v = rv.Elem().Interface()
			continue
		}
		return false
	}
	return false
}

// Key derives the key of this plan's statement for a session identity and the
// arguments as database/sql passes them. It hashes the statement text itself, not
// only its fingerprint, because texts differing only in literals share a
// fingerprint. It reports false when an argument has a type it cannot encode with
// certainty, or is text holding one of the words now, today, tomorrow, yesterday
// (a date/time parameter reads those as the current time), or is not text where the
// plan assumed text (Explain lists those). The statement must then not be cached.
func (p *Plan) Key(id *Identity, args []driver.NamedValue) (Key, bool) {
	// Most keys fit the stack buffer; longer ones grow it onto the heap.
	var buf [512]byte
	b := append(buf[:0], keyVersion)
	b = appendKeyString(b, id.Server)
	b = appendKeyString(b, id.Database)
	b = appendKeyString(b, id.Role)
	b = appendKeyString(b, id.SearchPath)
	b = appendKeyString(b, id.Settings)
	b = binary.LittleEndian.AppendUint64(b, p.textHash.Hi)
	b = binary.LittleEndian.AppendUint64(b, p.textHash.Lo)
	b = binary.LittleEndian.AppendUint64(b, p.Fingerprint)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(args)))
	ok := true
	for _, n := range p.textParams {
		if n < 1 || n > len(args) || !isText(args[n-1].Value) {
			ok = false
		}
	}
	for i := 0; ok && i < len(args); i++ {
		if b, ok = appendKeyArg(b, args[i].Value, 0); !ok {
			break
		}
	}
	var k Key
	if ok {
		k = xxh3.Hash128(b).Bytes()
	}
	return k, ok
}

func appendKeyString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Argument type tags of the key encoding.
const (
	keyNil byte = iota + 1
	keyInt
	keyUint
	keyFloat
	keyBool
	keyString
	keyBytes
	keyTime
	keyUUID
	keySlice
)

// appendKeyArg encodes one argument with its type. Types that pgx sends the same way
// share a tag (every Go integer width is an integer); types it may send differently
// do not.
func appendKeyArg(b []byte, v any, depth int) ([]byte, bool) {
	if depth > 4 {
		return b, false
	}
	switch x := v.(type) {
	case nil:
		return append(b, keyNil), true
	case int64:
		return binary.LittleEndian.AppendUint64(append(b, keyInt), uint64(x)), true
	case int:
		return binary.LittleEndian.AppendUint64(append(b, keyInt), uint64(x)), true
	case int32:
		return binary.LittleEndian.AppendUint64(append(b, keyInt), uint64(x)), true
	case string:
		if hasTimeWord(x) {
			return b, false
		}
		return appendKeyString(append(b, keyString), x), true
	case []byte:
		if x == nil {
			return append(b, keyNil), true
		}
		if hasTimeWord(unsafe.String(unsafe.SliceData(x), len(x))) { // not retained
			return b, false
		}
		b = append(b, keyBytes)
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...), true
	case float64:
		return binary.LittleEndian.AppendUint64(append(b, keyFloat), math.Float64bits(x)), true
	case bool:
		if x {
			return append(b, keyBool, 1), true
		}
		return append(b, keyBool, 0), true
	case time.Time:
		// The instant, and the wall clock and zone name: date and timestamp
		// parameters take the wall clock, timestamptz the instant.
		b = append(b, keyTime)
		b = binary.LittleEndian.AppendUint64(b, uint64(x.Unix()))
		b = binary.LittleEndian.AppendUint32(b, uint32(x.Nanosecond()))
		name, offset := x.Zone()
		b = binary.LittleEndian.AppendUint32(b, uint32(int32(offset)))
		return appendKeyString(b, name), true
	case [16]byte:
		return append(append(b, keyUUID), x[:]...), true
	case driver.Valuer:
		rv := reflect.ValueOf(x)
		if rv.Kind() == reflect.Pointer && rv.IsNil() {
			return append(b, keyNil), true
		}
		val, err := x.Value()
		if err != nil {
			return b, false
		}
		return appendKeyArg(b, val, depth+1)
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return append(b, keyNil), true
		}
		return appendKeyArg(b, rv.Elem().Interface(), depth+1)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return binary.LittleEndian.AppendUint64(append(b, keyInt), uint64(rv.Int())), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return binary.LittleEndian.AppendUint64(append(b, keyUint), rv.Uint()), true
	case reflect.Float32:
		return binary.LittleEndian.AppendUint64(append(b, keyFloat), math.Float64bits(rv.Float())), true
	case reflect.String:
		if hasTimeWord(rv.String()) {
			return b, false
		}
		return appendKeyString(append(b, keyString), rv.String()), true
	case reflect.Bool:
		return appendKeyArg(b, rv.Bool(), depth+1)
	case reflect.Array:
		if rv.Len() == 16 && rv.Type().Elem().Kind() == reflect.Uint8 {
			var u [16]byte
			reflect.Copy(reflect.ValueOf(&u).Elem(), rv)
			return append(append(b, keyUUID), u[:]...), true
		}
	case reflect.Slice:
		if rv.IsNil() {
			return append(b, keyNil), true
		}
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return appendKeyArg(b, rv.Bytes(), depth+1)
		}
		b = append(b, keySlice)
		b = binary.AppendUvarint(b, uint64(rv.Len()))
		ok := true
		for i := 0; i < rv.Len() && ok; i++ {
			b, ok = appendKeyArg(b, rv.Index(i).Interface(), depth+1)
		}
		return b, ok
	}
	return b, false
}
