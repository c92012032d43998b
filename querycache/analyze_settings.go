package querycache

import (
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// This file is the explicit list of built-in functions that pg_proc does not mark
// IMMUTABLE but whose result, for the same arguments, depends only on what the key
// already holds: the session settings in Identity.Settings (TimeZone, DateStyle,
// IntervalStyle), the database (Identity.Database) or the role (Identity.Role).
// Nothing else may go here. In particular these stay refused, whatever their
// arguments: functions that read the clock (now(), statement_timestamp(), the
// one-argument age(), timezone(text, timetz) and the time-to-timetz conversion,
// which take the current date for the zone offset), random numbers, sequences,
// tables or the catalog (reg* input, to_regclass, current_schema, which depends on
// which schemas exist), configuration that is not in the key (current_setting,
// lc_monetary, lc_numeric, lc_time, default_text_search_config, xmloption,
// extra_float_digits, bytea_output, timezone_abbreviations) and session_user,
// which SET ROLE does not change while current_user does.
//
// Only functions in pg_catalog with an OID below 16384 (created by initdb, so
// built in) are matched, by name and exact argument types: an extension or user
// function of the same name never is.

// Built-in type OIDs the list and overload resolution use (pg_type.dat).
const (
	oidChar          = 18
	oidName          = 19
	oidJSON          = 114
	oidXML           = 142
	oidCidr          = 650
	oidFloat4        = 700
	oidFloat8        = 701
	oidMoney         = 790
	oidMacaddr       = 829
	oidInet          = 869
	oidACLItem       = 1033
	oidBpchar        = 1042
	oidTime          = 1083
	oidInterval      = 1186
	oidTimetz        = 1266
	oidRecord        = 2249
	oidAny           = 2276
	oidAnyArray      = 2277
	oidAnyElement    = 2283
	oidAnyNonArray   = 2776
	oidAnyEnum       = 3500
	oidJSONB         = 3802
	oidAnyRange      = 3831
	oidAnyMultirange = 4537
	oidAnyCompatMR   = 4538
	oidAnyCompat     = 5077
	oidAnyCompatArr  = 5078
	oidAnyCompatNA   = 5079
	oidAnyCompatRng  = 5080
)

// firstNormalObjectID is FirstNormalObjectId: initdb creates every built-in object
// below it, and every object created later is at or above it.
const firstNormalObjectID = 16384

// settingsRule is one entry of the list. ok, when set, is a condition on the call's
// arguments (aligned with the overload's parameters), described by cond; nil means
// always.
type settingsRule struct {
	ok   func(r *resolver, args []callArg) bool
	cond string
}

// procKey is the list's key for a function: its name and argument type OIDs.
func procKey(name string, args []uint32) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('(')
	for i, a := range args {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(a), 10))
	}
	b.WriteByte(')')
	return b.String()
}

var settingsOnly = map[string]settingsRule{}

func allow(rule settingsRule, name string, args ...uint32) {
	settingsOnly[procKey(name, args)] = rule
}

func init() {
	always := settingsRule{}

	// TimeZone only. These convert between an instant (timestamptz) and a wall
	// clock (date, time, timestamp) or split an instant into wall-clock fields,
	// which needs the session's time zone and nothing else; they are STABLE
	// only because TimeZone can change. It is in the key.
	allow(always, "date_trunc", oidText, oidTimestamptz)
	allow(always, "date_part", oidText, oidTimestamptz)
	allow(always, "extract", oidText, oidTimestamptz)
	allow(always, "date", oidTimestamptz)
	allow(always, "timestamp", oidTimestamptz)
	allow(always, "time", oidTimestamptz)
	allow(always, "timestamptz", oidDate)
	allow(always, "timestamptz", oidTimestamp)
	allow(always, "timestamptz", oidDate, oidTime)
	allow(always, "make_timestamptz", oidInt4, oidInt4, oidInt4, oidInt4, oidInt4, oidFloat8)
	// Adding an interval to an instant walks the wall clock across DST changes of
	// the session's zone: TimeZone only.
	allow(always, "timestamptz_pl_interval", oidTimestamptz, oidInterval)
	allow(always, "timestamptz_mi_interval", oidTimestamptz, oidInterval)
	allow(always, "interval_pl_timestamptz", oidInterval, oidTimestamptz)
	allow(always, "date_add", oidTimestamptz, oidInterval)      // PostgreSQL 16+
	allow(always, "date_subtract", oidTimestamptz, oidInterval) // PostgreSQL 16+
	allow(always, "generate_series", oidTimestamptz, oidTimestamptz, oidInterval)
	allow(always, "overlaps", oidTimestamptz, oidInterval, oidTimestamptz, oidInterval)
	allow(always, "overlaps", oidTimestamptz, oidTimestamptz, oidTimestamptz, oidInterval)
	allow(always, "overlaps", oidTimestamptz, oidInterval, oidTimestamptz, oidTimestamptz)
	// Comparing a wall clock with an instant reads the wall clock in the
	// session's zone: TimeZone only.
	for _, cmp := range []string{"eq", "ne", "lt", "le", "gt", "ge", "cmp"} {
		for _, pair := range [][2]uint32{{oidDate, oidTimestamptz}, {oidTimestamptz, oidDate}, {oidTimestamp, oidTimestamptz}, {oidTimestamptz, oidTimestamp}} {
			allow(always, typeShortName(pair[0])+"_"+cmp+"_"+typeShortName(pair[1]), pair[0], pair[1])
		}
	}

	// The database and the role the statement runs as are in the key
	// (Identity.Database, Identity.Role: current_user, which the driver reads
	// again after any statement that may change it).
	allow(always, "current_database")
	allow(always, "current_user")

	// to_char of date/time values: the fields come from the value (and TimeZone
	// for timestamptz); lc_time matters only through the TM prefix, which
	// translates day and month names. A format that is a literal without "TM"
	// (in any case) depends on nothing else.
	dateFormat := settingsRule{cond: "with a literal format without TM",
		ok: func(_ *resolver, args []callArg) bool { return literalFormat(args, 1, "tm") }}
	allow(dateFormat, "to_char", oidTimestamptz, oidText)
	allow(dateFormat, "to_char", oidTimestamp, oidText)
	allow(dateFormat, "to_char", oidInterval, oidText)
	// to_char of numbers: lc_numeric and lc_monetary matter only through the D
	// (decimal point), G (group separator) and L (currency symbol) patterns,
	// which also switch the sign to the locale's. A literal format without those
	// letters (in any case) depends on nothing else.
	numberFormat := settingsRule{cond: "with a literal format without D, G or L",
		ok: func(_ *resolver, args []callArg) bool { return literalFormat(args, 1, "d", "g", "l") }}
	for _, t := range []uint32{oidNumeric, oidInt4, oidInt8, oidFloat4, oidFloat8} {
		allow(numberFormat, "to_char", t, oidText)
	}

	// Functions that turn values of any type into text or JSON are STABLE because
	// they call the type's output function, which may depend on anything. For
	// the types of outputSafeTypes it depends at most on DateStyle,
	// IntervalStyle and TimeZone, all in the key (JSON writes dates and times in
	// ISO form regardless of DateStyle). So these are safe when every argument
	// has such a type.
	allArgs := settingsRule{cond: "with arguments of types whose output depends only on the key",
		ok: func(r *resolver, args []callArg) bool { return r.outputSafe(args, 0) }}
	allow(allArgs, "concat", oidAny)
	allow(allArgs, "concat_ws", oidText, oidAny)
	allow(allArgs, "format", oidText)
	allow(allArgs, "format", oidText, oidAny)
	allow(allArgs, "quote_literal", oidAnyElement)
	allow(allArgs, "quote_nullable", oidAnyElement)
	allow(allArgs, "textanycat", oidText, oidAnyNonArray) // text || value
	allow(allArgs, "anytextcat", oidAnyNonArray, oidText) // value || text
	allow(allArgs, "to_json", oidAnyElement)
	allow(allArgs, "to_jsonb", oidAnyElement)
	allow(allArgs, "json_agg", oidAnyElement)
	allow(allArgs, "jsonb_agg", oidAnyElement)
	allow(allArgs, "json_object_agg", oidAny, oidAny)
	allow(allArgs, "json_build_object")
	allow(allArgs, "json_build_object", oidAny)
	allow(allArgs, "jsonb_build_object")
	allow(allArgs, "jsonb_build_object", oidAny)
	allow(allArgs, "json_build_array")
	allow(allArgs, "json_build_array", oidAny)
	allow(allArgs, "jsonb_build_array")
	allow(allArgs, "jsonb_build_array", oidAny)
	allow(allArgs, "row_to_json", oidRecord)
	allow(allArgs, "row_to_json", oidRecord, oidBool)
	allow(allArgs, "array_to_json", oidAnyArray)
	allow(allArgs, "array_to_json", oidAnyArray, oidBool)
}

func typeShortName(oid uint32) string {
	switch oid {
	case oidDate:
		return "date"
	case oidTimestamp:
		return "timestamp"
	case oidTimestamptz:
		return "timestamptz"
	}
	return strconv.FormatUint(uint64(oid), 10)
}

// outputSafeTypes are the built-in types whose text (and JSON) output depends at
// most on DateStyle, IntervalStyle and TimeZone. Left out on purpose: float4 and
// float8 (extra_float_digits), bytea (bytea_output), money (lc_monetary), xml
// (xmloption), reg* types (the catalog) and any type the list does not know.
// Enums count as safe (see factsOutputSafe).
var outputSafeTypes = map[uint32]bool{
	oidBool: true, oidInt2: true, oidInt4: true, oidInt8: true, oidOID: true, oidNumeric: true,
	oidText: true, oidVarchar: true, oidBpchar: true, oidName: true, oidChar: true, oidUUID: true,
	oidDate: true, oidTime: true, oidTimestamp: true, oidTimestamptz: true, oidInterval: true,
	oidJSON: true, oidJSONB: true, oidInet: true, oidCidr: true, oidMacaddr: true,
	oidUnknown: true, // a string literal or NULL: written as is
}

// outputSafe reports whether every argument from index from on has a type of
// outputSafeTypes: directly, as a domain over one, as an array of one, or as a
// whole-row reference to a relation whose columns all are.
func (r *resolver) outputSafe(args []callArg, from int) bool {
	for _, a := range args[from:] {
		if !typeOutputSafe(a.t) {
			return false
		}
	}
	return true
}

func typeOutputSafe(t argType) bool {
	if t.row != nil {
		if len(t.row.columns) == 0 {
			return false
		}
		for _, c := range t.row.columns {
			if !factsOutputSafe(c.t) {
				return false
			}
		}
		return true
	}
	return factsOutputSafe(t.typeFacts)
}

func factsOutputSafe(f typeFacts) bool {
	switch {
	case f.oid == 0:
		return false
	case outputSafeTypes[f.oid]:
		return true
	case f.kind == kindEnum, f.kind == kindDomain && f.baseKind == kindEnum:
		// enum_out is STABLE only because ALTER TYPE ... RENAME VALUE changes a
		// label: a schema change, like renaming a column, which affects an enum
		// column read directly just as much; the analyzer accepts those.
		return true
	case f.kind == kindDomain:
		return f.baseKind != kindDomain && outputSafeTypes[f.base]
	case f.kind == kindArray:
		return outputSafeTypes[f.elem]
	}
	return false
}

// literalFormat reports whether argument i is a string literal (possibly cast to
// text or varchar) containing none of the given letter sequences, in any case.
func literalFormat(args []callArg, i int, forbidden ...string) bool {
	if i >= len(args) {
		return false
	}
	s, ok := stringLiteral(args[i].node)
	if !ok {
		return false
	}
	lower := strings.ToLower(s)
	for _, f := range forbidden {
		if strings.Contains(lower, f) {
			return false
		}
	}
	return true
}

// stringLiteral returns the value of a string literal, bare or cast to text or
// varchar.
func stringLiteral(n *pg.Node) (string, bool) {
	if tc := n.GetTypeCast(); tc != nil {
		q, ok := typeQName(tc.TypeName)
		if !ok || len(tc.TypeName.ArrayBounds) > 0 {
			return "", false
		}
		switch q {
		case qname{name: "text"}, qname{schema: "pg_catalog", name: "text"}, qname{schema: "pg_catalog", name: "varchar"}:
		default:
			return "", false
		}
		n = tc.Arg
	}
	c := n.GetAConst()
	if c == nil || c.Isnull {
		return "", false
	}
	sv, ok := c.Val.(*pg.A_Const_Sval)
	if !ok {
		return "", false
	}
	return sv.Sval.GetSval(), true
}
