package querycache

import (
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"sync"
	"time"
	"unsafe"
)

// The result codec stores a Result in a shared store (Redis). Layout, version 1:
//
//	magic "QC", version byte
//	uvarint column count, then per column:
//	  string name, uvarint type OID, string database type name,
//	  flags byte (1 has length, 2 has precision/scale, 4 has nullable, 8 nullable),
//	  [varint length], [varint precision, varint scale], scan type byte
//	uvarint row count, then row-major values, each a kind byte and its payload:
//	  nil, false, true: nothing; int64: zigzag varint; float64: 8 bytes little endian;
//	  string, []byte: uvarint length and the bytes;
//	  time.Time: location kind byte, [name string, [varint offset]], varint Unix
//	  seconds, uvarint nanoseconds
//	CRC-32C of everything before it, 4 bytes little endian
//
// string is a uvarint length and the bytes. Decoding checks every length against
// the bytes left, so a corrupt or foreign value is an error, never a panic or a huge
// allocation.

const (
	codecMagic0  = 'Q'
	codecMagic1  = 'C'
	codecVersion = 1
	// maxCodecColumns is PostgreSQL's limit on the columns of a result (1664).
	maxCodecColumns = 1664
)

const (
	colHasLength = 1 << iota
	colHasPrecisionScale
	colHasNullable
	colNullable
	colFlagsAll = colHasLength | colHasPrecisionScale | colHasNullable | colNullable
)

const (
	kindNil byte = iota
	kindFalse
	kindTrue
	kindInt64
	kindFloat64
	kindString
	kindBytes
	kindTime
	kindNilBytes // []byte(nil): database/sql tells it from nil when scanning into *any or *string
)

const (
	locUTC byte = iota
	locLocal
	locNamed // a zone database name: decoded with time.LoadLocation
	locFixed // name and offset: decoded with time.FixedZone
)

// ErrCorrupt: a stored value is not a valid encoding of this version (damaged,
// truncated, or written by something else). The stores treat it as a miss and
// delete it.
var ErrCorrupt = errors.New("querycache: corrupt cached value")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EncodeResult appends the encoding of r to dst and returns the extended slice.
func EncodeResult(dst []byte, r *Result) []byte {
	start := len(dst)
	dst = append(dst, codecMagic0, codecMagic1, codecVersion)
	dst = binary.AppendUvarint(dst, uint64(len(r.columns)))
	for i := range r.columns {
		c := &r.columns[i]
		dst = appendString(dst, c.Name)
		dst = binary.AppendUvarint(dst, uint64(c.TypeOID))
		dst = appendString(dst, c.DatabaseTypeName)
		var flags byte
		if c.HasLength {
			flags |= colHasLength
		}
		if c.HasPrecisionScale {
			flags |= colHasPrecisionScale
		}
		if c.HasNullable {
			flags |= colHasNullable
		}
		if c.Nullable {
			flags |= colNullable
		}
		dst = append(dst, flags)
		if c.HasLength {
			dst = binary.AppendVarint(dst, c.Length)
		}
		if c.HasPrecisionScale {
			dst = binary.AppendVarint(dst, c.Precision)
			dst = binary.AppendVarint(dst, c.Scale)
		}
		dst = append(dst, byte(c.ScanType))
	}
	dst = binary.AppendUvarint(dst, uint64(r.rows))
	for _, v := range r.values {
		dst = appendValue(dst, v)
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendValue encodes one value. Results hold only driver.Value types (the builder
// and the decoder check), so the default case cannot happen.
func appendValue(dst []byte, v driver.Value) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, kindNil)
	case bool:
		if v {
			return append(dst, kindTrue)
		}
		return append(dst, kindFalse)
	case int64:
		return binary.AppendVarint(append(dst, kindInt64), v)
	case float64:
		return binary.LittleEndian.AppendUint64(append(dst, kindFloat64), math.Float64bits(v))
	case string:
		return appendString(append(dst, kindString), v)
	case []byte:
		if v == nil {
			return append(dst, kindNilBytes)
		}
		dst = binary.AppendUvarint(append(dst, kindBytes), uint64(len(v)))
		return append(dst, v...)
	case time.Time:
		return appendTime(append(dst, kindTime), v)
	default:
		panic(fmt.Sprintf("querycache: result holds a %T", v))
	}
}

func appendTime(dst []byte, t time.Time) []byte {
	switch loc := t.Location(); {
	case loc == time.UTC:
		dst = append(dst, locUTC)
	case loc == time.Local:
		dst = append(dst, locLocal)
	case isZoneName(loc.String()):
		dst = appendString(append(dst, locNamed), loc.String())
	default:
		name, offset := t.Zone()
		dst = appendString(append(dst, locFixed), name)
		dst = binary.AppendVarint(dst, int64(offset))
	}
	dst = binary.AppendVarint(dst, t.Unix())
	return binary.AppendUvarint(dst, uint64(t.Nanosecond()))
}

// zones caches locations loaded by name. Only names that load are kept, so its size
// is bounded by the zone database.
var zones sync.Map // string -> *time.Location

func loadZone(name string) (*time.Location, bool) {
	if loc, ok := zones.Load(name); ok {
		return loc.(*time.Location), true
	}
	if name == "" || name == "UTC" || name == "Local" {
		return nil, false // LoadLocation maps these to UTC and Local, which have kinds of their own
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, false
	}
	zones.Store(name, loc)
	return loc, true
}

func isZoneName(name string) bool {
	_, ok := loadZone(name)
	return ok
}

// DecodeResult decodes a value written by EncodeResult. Strings in the result share
// the memory of data (a Go string is immutable); []byte values are copied.
func DecodeResult(data string) (*Result, error) {
	r, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return r, nil
}

// readOnlyBytes views s as a byte slice without copying it, for functions that only
// read their argument (checksums, fixed-width loads). Writing to it is undefined.
func readOnlyBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

type decoder struct {
	s   string
	pos int
}

var errTruncated = errors.New("truncated")

func (d *decoder) byte() (byte, error) {
	if d.pos >= len(d.s) {
		return 0, errTruncated
	}
	b := d.s[d.pos]
	d.pos++
	return b, nil
}

func (d *decoder) uvarint() (uint64, error) {
	var x uint64
	var shift uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := d.byte()
		if err != nil {
			return 0, err
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				return 0, errors.New("varint overflows 64 bits")
			}
			return x | uint64(b)<<shift, nil
		}
		x |= uint64(b&0x7f) << shift
		shift += 7
	}
	return 0, errors.New("varint overflows 64 bits")
}

func (d *decoder) varint() (int64, error) {
	ux, err := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x, err
}

// count reads a length or count and checks it against what is left: every counted
// thing takes at least perItem bytes.
func (d *decoder) count(perItem int) (int, error) {
	n, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if n > uint64(len(d.s)-d.pos)/uint64(perItem) {
		return 0, fmt.Errorf("count %d exceeds the %d bytes left", n, len(d.s)-d.pos)
	}
	return int(n), nil
}

func (d *decoder) string() (string, error) {
	n, err := d.count(1)
	if err != nil {
		return "", err
	}
	s := d.s[d.pos : d.pos+n]
	d.pos += n
	return s, nil
}

func decode(s string) (*Result, error) {
	if len(s) < 3+4 {
		return nil, errTruncated
	}
	if s[0] != codecMagic0 || s[1] != codecMagic1 {
		return nil, errors.New("not a pgcache result")
	}
	if s[2] != codecVersion {
		return nil, fmt.Errorf("codec version %d, want %d", s[2], codecVersion)
	}
	body := s[:len(s)-4]
	if want := binary.LittleEndian.Uint32(readOnlyBytes(s[len(s)-4:])); crc32.Checksum(readOnlyBytes(body), castagnoli) != want {
		return nil, errors.New("checksum mismatch")
	}
	d := &decoder{s: body, pos: 3}
	// A column takes at least 5 bytes (name, OID, type name, flags, scan type).
	ncols, err := d.count(5)
	if err != nil {
		return nil, err
	}
	if ncols > maxCodecColumns {
		return nil, fmt.Errorf("%d columns", ncols)
	}
	size := sizeResult
	cols := make([]Column, ncols)
	for i := range cols {
		c := &cols[i]
		if c.Name, err = d.string(); err != nil {
			return nil, err
		}
		oid, err := d.uvarint()
		if err != nil {
			return nil, err
		}
		if oid > math.MaxUint32 {
			return nil, fmt.Errorf("type OID %d", oid)
		}
		c.TypeOID = uint32(oid)
		if c.DatabaseTypeName, err = d.string(); err != nil {
			return nil, err
		}
		flags, err := d.byte()
		if err != nil {
			return nil, err
		}
		if flags&^colFlagsAll != 0 {
			return nil, fmt.Errorf("column flags %#x", flags)
		}
		c.HasLength = flags&colHasLength != 0
		c.HasPrecisionScale = flags&colHasPrecisionScale != 0
		c.HasNullable = flags&colHasNullable != 0
		c.Nullable = flags&colNullable != 0
		if c.HasLength {
			if c.Length, err = d.varint(); err != nil {
				return nil, err
			}
		}
		if c.HasPrecisionScale {
			if c.Precision, err = d.varint(); err != nil {
				return nil, err
			}
			if c.Scale, err = d.varint(); err != nil {
				return nil, err
			}
		}
		st, err := d.byte()
		if err != nil {
			return nil, err
		}
		if st >= byte(scanTypeCount) {
			return nil, fmt.Errorf("scan type %d", st)
		}
		c.ScanType = ScanType(st)
		size += sizeColumn + len(c.Name) + len(c.DatabaseTypeName)
	}
	nrows, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	// Every value takes at least one byte: a bound on rows*columns before allocating.
	left := uint64(len(d.s) - d.pos)
	if ncols == 0 {
		// SELECT FROM t: rows without columns take no bytes, and no memory either.
		if nrows > math.MaxInt32 {
			return nil, fmt.Errorf("%d rows of no columns", nrows)
		}
	} else if nrows > left/uint64(ncols) {
		return nil, fmt.Errorf("%d rows of %d columns exceed the %d bytes left", nrows, ncols, left)
	}
	values := make([]driver.Value, int(nrows)*ncols)
	var blob []byte // backing memory of every []byte value, allocated once
	for i := range values {
		v, n, err := d.value(&blob)
		if err != nil {
			return nil, fmt.Errorf("value %d: %w", i, err)
		}
		values[i] = v
		size += n
	}
	if d.pos != len(d.s) {
		return nil, fmt.Errorf("%d bytes after the last value", len(d.s)-d.pos)
	}
	return newResult(cols, values, int(nrows), size), nil
}

// value decodes one value and returns it with its estimated size (valueSize).
// []byte values are carved out of *blob, which is allocated on first use with room
// for every byte left, so that a result costs one allocation for all of them.
func (d *decoder) value(blob *[]byte) (driver.Value, int, error) {
	kind, err := d.byte()
	if err != nil {
		return nil, 0, err
	}
	switch kind {
	case kindNil:
		return nil, sizeValue, nil
	case kindFalse:
		return false, sizeValue, nil
	case kindTrue:
		return true, sizeValue, nil
	case kindInt64:
		v, err := d.varint()
		return v, sizeValue + 8, err
	case kindFloat64:
		if len(d.s)-d.pos < 8 {
			return nil, 0, errTruncated
		}
		v := math.Float64frombits(binary.LittleEndian.Uint64(readOnlyBytes(d.s[d.pos : d.pos+8])))
		d.pos += 8
		return v, sizeValue + 8, nil
	case kindString:
		v, err := d.string()
		return v, sizeValue + sizeHeader + len(v), err
	case kindNilBytes:
		return []byte(nil), sizeValue + sizeHeader, nil
	case kindBytes:
		v, err := d.string()
		if err != nil {
			return nil, 0, err
		}
		if *blob == nil {
			*blob = make([]byte, 0, len(d.s)-d.pos+len(v))
		}
		start := len(*blob)
		*blob = append(*blob, v...)
		return (*blob)[start:len(*blob):len(*blob)], sizeValue + sizeHeader + len(v), nil
	case kindTime:
		v, err := d.time()
		return v, sizeValue + 24, err
	default:
		return nil, 0, fmt.Errorf("value kind %d", kind)
	}
}

func (d *decoder) time() (time.Time, error) {
	lk, err := d.byte()
	if err != nil {
		return time.Time{}, err
	}
	var loc *time.Location
	switch lk {
	case locUTC:
		loc = time.UTC
	case locLocal:
		loc = time.Local
	case locNamed:
		name, err := d.string()
		if err != nil {
			return time.Time{}, err
		}
		var ok bool
		if loc, ok = loadZone(name); !ok {
			return time.Time{}, fmt.Errorf("unknown time zone %q", name)
		}
	case locFixed:
		name, err := d.string()
		if err != nil {
			return time.Time{}, err
		}
		offset, err := d.varint()
		if err != nil {
			return time.Time{}, err
		}
		if offset < -24*3600 || offset > 24*3600 {
			return time.Time{}, fmt.Errorf("zone offset %d", offset)
		}
		loc = time.FixedZone(name, int(offset))
	default:
		return time.Time{}, fmt.Errorf("location kind %d", lk)
	}
	sec, err := d.varint()
	if err != nil {
		return time.Time{}, err
	}
	nsec, err := d.uvarint()
	if err != nil {
		return time.Time{}, err
	}
	if nsec >= 1e9 {
		return time.Time{}, fmt.Errorf("nanoseconds %d", nsec)
	}
	return time.Unix(sec, int64(nsec)).In(loc), nil
}
