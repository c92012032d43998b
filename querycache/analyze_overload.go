package querycache

import (
	"fmt"
	"slices"
	"strconv"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// This file decides which overloads a function call or an operator may resolve to,
// and whether all of them are safe to cache. PostgreSQL's own resolution
// (func_get_detail, oper_select_candidate) is not reproduced: the analyzer computes
// a superset of the overloads PostgreSQL can pick, by excluding only what it is
// certain PostgreSQL excludes, and accepts the call when every overload left is
// safe. An ambiguous call with an unsafe overload is refused, never guessed.
//
// An overload is excluded when:
//   - its parameter count cannot take the call's arguments (defaults and VARIADIC
//     counted, as FuncnameGetCandidates does);
//   - an argument of a known type cannot be implicitly converted to its parameter
//     type: both are plain base, enum or array types (not both arrays) and pg_cast
//     has no implicit cast between them, or the parameter is anyarray, anyrange,
//     anymultirange or anyenum and the argument is plainly not one (can_coerce_type);
//   - every argument's type is known and another overload takes exactly those
//     types, or, for an operator, one operand is a literal or parameter and another
//     operator takes the other operand's type on both sides (PostgreSQL picks an
//     exact match first).
//
// Argument types come from columns (the catalog), literals, explicit casts, and the
// results of calls resolved the same way. A parameter without a cast ($1) has no
// type of its own for function calls.
//
// An overload is safe when its function is IMMUTABLE or is on the settings-only list
// (analyze_settings.go) with its condition met, and no argument needs a conversion
// that may run an unsafe function: an implicit cast whose function is not safe
// (time to timetz, text to regclass, user casts), or the input function of a type
// whose text input reads the catalog, the clock or settings outside the key (reg*,
// money, xml, aclitem, timetz) for a literal or parameter. Where the argument's
// type is not known, the conversion is possible only if the statement holds values
// of such a type: that is decided once the whole statement is resolved
// (checkConditional).

// oidUnknown is the type of string literals and NULL before resolution.
const oidUnknown = 705

// argType is the type of an expression as far as the analyzer can tell: a type
// (oid 0 when unknown, oidUnknown for string literals and NULL) or a whole-row
// reference to a relation.
type argType struct {
	typeFacts
	row *relInfo
}

// concrete reports whether the type is known and not a literal's unknown type.
func (t argType) concrete() bool { return t.oid != 0 && t.oid != oidUnknown }

// callArg is one argument of a call or operand of an operator.
type callArg struct {
	node *pg.Node
	t    argType
}

// callResult is the verdict on a call: safe or why not, and the result type when
// every overload left returns the same one.
type callResult struct {
	ok     bool
	reason Reason
	detail string
	ret    argType
}

// candidate is an overload with its parameter types for this call's arguments
// (VARIADIC expanded, defaulted parameters dropped); params nil: positions unknown
// (named arguments).
type candidate struct {
	proc      *procInfo
	params    []uint32
	ret       uint32
	builtinOp bool // a built-in operator
}

// unsafeInputTypes are the types whose text input depends on more than the key: the
// catalog (reg*), lc_monetary (money), xmloption (xml), roles (aclitem), the current
// date (timetz: the zone offset of a time of day is the one in effect today).
var unsafeInputTypes = map[uint32]bool{oidMoney: true, oidXML: true, oidACLItem: true, oidTimetz: true}

func isUnsafeInput(oid uint32) bool { return unsafeInputTypes[oid] || regTypeOIDs[oid] }

// procSafeAlone reports whether a function is safe whatever its arguments.
func procSafeAlone(p *procInfo) bool {
	if p.volatility == 'i' {
		return true
	}
	rule, ok := settingsOnly[p.key]
	return ok && p.builtin && rule.ok == nil
}

// callArgs returns a call's arguments as PostgreSQL resolves them (the ORDER BY
// expressions of an ordered-set aggregate included), and whether any is named.
func (r *resolver) callArgs(sc *occScope, u *funcUse) ([]callArg, bool) {
	c := u.call
	if c.AggStar {
		return nil, false
	}
	nodes := c.Args
	if c.AggWithinGroup {
		nodes = append(append([]*pg.Node(nil), nodes...), sortNodes(c.AggOrder)...)
	}
	named := false
	args := make([]callArg, len(nodes))
	for i, n := range nodes {
		if na := n.GetNamedArgExpr(); na != nil {
			named = true
			n = na.Arg
		}
		args[i] = callArg{node: n, t: r.typeOf(sc, n, u.level, u.vis)}
	}
	return args, named
}

func sortNodes(order []*pg.Node) []*pg.Node {
	out := make([]*pg.Node, 0, len(order))
	for _, o := range order {
		if sb := o.GetSortBy(); sb != nil {
			out = append(out, sb.Node)
		} else {
			out = append(out, o)
		}
	}
	return out
}

// resolveFunc checks a function call, once per call node.
func (r *resolver) resolveFunc(sc *occScope, u *funcUse) *callResult {
	if res, ok := sc.funcMemo[u.call]; ok {
		return res
	}
	res := &callResult{reason: ReasonVolatileFunction, detail: u.name.String()}
	sc.funcMemo[u.call] = res // a call nested in itself cannot happen; refuse if it did
	*res = r.checkFunc(sc, u)
	return res
}

func (r *resolver) checkFunc(sc *occScope, u *funcUse) callResult {
	info := sc.funcs[u.name]
	if len(info.overloads) == 0 && info.asType == 0 {
		return callResult{reason: ReasonUnknownObject, detail: "function " + u.name.String()}
	}
	args, named := r.callArgs(sc, u)
	cands := candidatesFor(info.overloads, len(args), named, u.call.FuncVariadic)
	return r.withParamTypes(args, named, func(args []callArg, unknownParams bool) callResult {
		return r.evalFunc(u, info, slices.Clone(cands), args, named, unknownParams)
	})
}

// withParamTypes evaluates a call whose arguments include parameters. First with
// the parameters of no known type (any type the client may declare). When that is
// refused, or leaves the result type open, it evaluates the call twice more, as
// the server resolves it when the driver leaves parameter types to it (unknown,
// like string literals) and when pgx declares them from Go strings (text): if both
// are safe, the call is accepted on the condition that those arguments are text
// (Plan.Key checks it), and its result type is the one both give.
func (r *resolver) withParamTypes(args []callArg, named bool, eval func(args []callArg, unknownParams bool) callResult) callResult {
	res := eval(args, false)
	if named || (res.ok && res.ret.oid != 0) || !slices.ContainsFunc(args, isParamArg) {
		return res
	}
	h1 := eval(paramsAs(args, typeFacts{oid: oidUnknown}), true)
	h2 := eval(paramsAs(args, textType), false)
	if !h1.ok || !h2.ok {
		return res
	}
	for _, a := range args {
		// $0 is no parameter: PostgreSQL rejects the statement.
		if p := a.node.GetParamRef(); p != nil && p.Number > 0 && !slices.Contains(r.textParams, int(p.Number)) {
			r.textParams = append(r.textParams, int(p.Number))
		}
	}
	out := callResult{ok: true}
	if h1.ret.oid == h2.ret.oid {
		out.ret = h1.ret
	}
	return out
}

// textType is text as a parameter pgx declares for a Go string has it.
var textType = typeFacts{oid: oidText, kind: kindBase, base: oidText, baseKind: kindBase, category: 'S', preferred: true}

func isParamArg(a callArg) bool { return a.node.GetParamRef() != nil }

func paramsAs(args []callArg, t typeFacts) []callArg {
	out := slices.Clone(args)
	for i := range out {
		if isParamArg(out[i]) {
			out[i].t = argType{typeFacts: t}
		}
	}
	return out
}

// evalFunc resolves a call for arguments of the given types.
func (r *resolver) evalFunc(u *funcUse, info funcInfo, cands []candidate, args []callArg, named, unknownParams bool) callResult {
	exact := !named && r.exactOnly(&cands, args)
	asCast := false
	if !exact && info.asType != 0 && len(args) == 1 && !named {
		// With no exact overload, f(x) where f names a type is a cast to it.
		dst, ok := r.facts[info.asType]
		if !ok {
			return callResult{reason: ReasonUnknownObject, detail: "type " + u.name.String()}
		}
		if reason, detail, ok := r.castSafe(args[0].node, args[0].t, dst, u.name.String()); !ok {
			return callResult{reason: reason, detail: detail}
		}
		r.notePresent(dst)
		asCast = true
	}
	if !exact && !named {
		cands = r.coercible(cands, args)
		if unknownParams {
			cands = r.unknownArgsCategories(cands, args)
		}
	}
	if len(cands) == 0 {
		if asCast {
			return callResult{ok: true, ret: argType{typeFacts: r.facts[info.asType]}}
		}
		return callResult{reason: ReasonUnknownObject, detail: "function " + u.name.String() + ": no overload takes these arguments"}
	}
	r.noteReturns(cands)
	if reason, detail, ok := r.candidatesSafe(cands, args, "", ReasonVolatileFunction); !ok {
		return callResult{reason: reason, detail: detail}
	}
	res := callResult{ok: true, ret: r.commonRet(cands)}
	if asCast {
		res.ret = argType{}
	}
	return res
}

// unknownArgsCategories narrows the candidates of a call whose arguments are all
// literals or parameters of unknown type as func_select_candidate does then: at
// each position it takes the string category if a candidate accepts one (else the
// one category all accept), and keeps the candidates accepting that category there,
// only its preferred type where one accepts it. With arguments of known types, or
// when that does not decide, the candidates are returned unchanged.
func (r *resolver) unknownArgsCategories(cands []candidate, args []callArg) []candidate {
	if len(args) == 0 {
		return cands
	}
	for _, a := range args {
		if a.t.oid != oidUnknown {
			return cands
		}
	}
	type slot struct {
		category  byte
		preferred bool
	}
	slots := make([]slot, len(args))
	for i := range args {
		var s slot
		conflict := false
		for _, c := range cands {
			f, ok := r.facts[c.params[i]]
			if !ok || f.category == 0 || c.params[i] == oidUnknown {
				return cands // an overload on unknown itself would match exactly
			}
			switch {
			case s.category == 0:
				s = slot{f.category, f.preferred}
			case f.category == s.category:
				s.preferred = s.preferred || f.preferred
			case f.category == 'S':
				s = slot{f.category, f.preferred}
			default:
				conflict = true
			}
		}
		if conflict && s.category != 'S' {
			return cands // PostgreSQL reports the call ambiguous
		}
		slots[i] = s
	}
	var kept []candidate
	for _, c := range cands {
		keep := true
		for i, s := range slots {
			f := r.facts[c.params[i]]
			if f.category != s.category || (s.preferred && !f.preferred) {
				keep = false
				break
			}
		}
		if keep {
			kept = append(kept, c)
		}
	}
	if len(kept) == 0 {
		return cands
	}
	return kept
}

// candidatesFor returns the overloads whose parameter count can take n arguments,
// as FuncnameGetCandidates does: VARIADIC expanded unless the call says VARIADIC,
// trailing parameters with defaults dropped. With named arguments positions are not
// worked out: the candidates have no params.
func candidatesFor(overloads []*procInfo, n int, named, variadicCall bool) []candidate {
	var out []candidate
	for _, p := range overloads {
		np := len(p.args)
		c := candidate{proc: p, ret: p.ret}
		switch {
		case named:
			// Named notation matches a VARIADIC function only when the call
			// says VARIADIC.
			if p.variadic != 0 && !variadicCall {
				continue
			}
			if n != np && (n > np || n+p.ndefaults < np) {
				continue
			}
		case p.variadic != 0 && !variadicCall && np <= n:
			c.params = make([]uint32, 0, n)
			c.params = append(c.params, p.args[:np-1]...)
			for len(c.params) < n {
				c.params = append(c.params, p.variadic)
			}
		case n == np:
			c.params = p.args
		case n < np && n+p.ndefaults >= np:
			c.params = p.args[:n]
		default:
			continue
		}
		out = append(out, c)
	}
	return out
}

// exactOnly narrows cands to the overloads taking exactly the arguments' types when
// every type is known and there are such overloads, and reports whether it did.
func (r *resolver) exactOnly(cands *[]candidate, args []callArg) bool {
	for _, a := range args {
		if !a.t.concrete() {
			return false
		}
	}
	var exact []candidate
	for _, c := range *cands {
		if len(c.params) != len(args) {
			continue
		}
		match := true
		for i, p := range c.params {
			if args[i].t.oid != p {
				match = false
				break
			}
		}
		if match {
			exact = append(exact, c)
		}
	}
	if len(exact) == 0 {
		return false
	}
	*cands = exact
	return true
}

// coercible keeps the candidates every argument may be implicitly converted to.
func (r *resolver) coercible(cands []candidate, args []callArg) []candidate {
	out := cands[:0:0]
	for _, c := range cands {
		ok := len(c.params) == len(args)
		for i := 0; ok && i < len(args); i++ {
			ok = r.mayCoerce(args[i].t, c.params[i])
		}
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// mayCoerce reports whether PostgreSQL may implicitly convert a value of type src to
// a parameter of type dst (can_coerce_type): false only when certain.
func (r *resolver) mayCoerce(src argType, dst uint32) bool {
	if !src.concrete() || src.oid == dst {
		return true
	}
	d, ok := r.facts[dst]
	if !ok {
		return true
	}
	sKind, sBase := src.kind, src.oid
	if src.kind == kindDomain {
		if src.baseKind == kindDomain || src.baseKind == kindUnknown {
			return true
		}
		sKind, sBase = src.baseKind, src.base
	}
	if sBase == dst {
		return true
	}
	is := func(kinds ...byte) bool {
		for _, k := range kinds {
			if sKind == k {
				return true
			}
		}
		return false
	}
	switch d.kind {
	case kindPseudo:
		switch dst {
		case oidAnyArray, oidAnyCompatArr:
			return !is(kindBase, kindEnum, kindRange, kindMultirange)
		case oidAnyRange, oidAnyCompatRng:
			return !is(kindBase, kindEnum, kindArray, kindMultirange)
		case oidAnyMultirange, oidAnyCompatMR:
			return !is(kindBase, kindEnum, kindArray, kindRange)
		case oidAnyEnum:
			return !is(kindBase, kindArray, kindRange, kindMultirange)
		}
		return true
	case kindBase, kindEnum, kindArray:
		if !is(kindBase, kindEnum, kindArray) || (sKind == kindArray && d.kind == kindArray) || r.casts == nil || !r.casts.complete {
			return true
		}
		c, ok := r.casts.casts[[2]uint32{sBase, dst}]
		return ok && c.context == 'i'
	}
	return true
}

// candidatesSafe checks every candidate; the detail names the first unsafe one.
func (r *resolver) candidatesSafe(cands []candidate, args []callArg, prefix string, reason Reason) (Reason, string, bool) {
	for _, c := range cands {
		why := r.candidateUnsafe(c, args)
		if why == "" {
			continue
		}
		detail := prefix + c.proc.signature + why
		if len(cands) > 1 {
			detail += ", one of several overloads the call may use"
		}
		return reason, detail, false
	}
	return ReasonNone, "", true
}

// candidateUnsafe returns why an overload is not safe for these arguments, "" if
// it is.
func (r *resolver) candidateUnsafe(c candidate, args []callArg) string {
	p := c.proc
	if p.volatility != 'i' {
		rule, listed := settingsOnly[p.key]
		switch {
		case !listed || !p.builtin:
			return volatilityWord(p.volatility)
		case rule.ok != nil && !rule.ok(r, args):
			return volatilityWord(p.volatility) + " (safe only " + rule.cond + ")"
		}
	}
	if c.params == nil {
		// Named arguments: positions unknown, so each argument may go to any
		// parameter.
		for _, a := range args {
			for _, param := range p.args {
				if why := r.conversionUnsafe(a, param, false); why != "" {
					return why
				}
			}
		}
		return ""
	}
	// Arguments of anycompatible parameters are converted to a common type.
	var compatible []callArg
	for i, param := range c.params {
		switch param {
		case oidAnyCompat, oidAnyCompatArr, oidAnyCompatNA, oidAnyCompatRng, oidAnyCompatMR:
			if i < len(args) {
				compatible = append(compatible, args[i])
			}
		}
		if i < len(args) {
			if why := r.conversionUnsafe(args[i], param, c.builtinOp); why != "" {
				return why
			}
		}
	}
	if len(compatible) > 1 {
		r.checkCommonType(compatible)
	}
	return ""
}

// conversionUnsafe returns why converting argument a to a parameter of type param
// may run a function that is not safe, "" if it cannot.
//
// An argument of unknown type (an expression the analyzer cannot type) can only be
// converted to such a type when the statement holds values of it, or of a type
// implicitly cast to it: that is checked once the whole statement is known
// (checkConditional). A literal or a parameter is read with the type's input
// function; for built-in operators that happens only when the other operand has
// that type (PostgreSQL gives an unknown operand the other one's type first, and no
// built-in operator takes one of these types beside an unrelated one that others
// convert to), so it is checked the same way; for functions it is refused.
func (r *resolver) conversionUnsafe(a callArg, param uint32, builtinOp bool) string {
	if a.t.concrete() && a.t.oid == param {
		return ""
	}
	literal := a.t.oid == oidUnknown || a.node.GetParamRef() != nil
	f := r.facts[param]
	switch {
	case a.node.GetAConst() != nil && a.node.GetAConst().Isnull:
		return "" // NULL is not read by the input function
	case f.kind == kindComposite || f.baseKind == kindComposite:
		// A row converted to another row type converts each field, with any
		// implicit cast between the fields' types.
		return ": an argument would be converted to " + r.typeName(param)
	case a.t.concrete():
		if r.unsafeTarget(param) && r.implicitUnsafe(a.t.typeFacts, param) {
			return ": an argument would be converted to " + r.typeName(param)
		}
		return ""
	case literal:
		if !r.unsafeInputTarget(param) {
			return ""
		}
		if !builtinOp {
			return ": an argument would be read as " + r.typeName(param)
		}
	case !r.unsafeTarget(param):
		return ""
	}
	if !slices.Contains(r.conditional, param) {
		r.conditional = append(r.conditional, param)
	}
	return ""
}

// implicitUnsafe reports whether the implicit conversion of a value of type s to
// type param may run a function that is not safe.
func (r *resolver) implicitUnsafe(s typeFacts, param uint32) bool {
	d, ok := r.facts[param]
	if !ok || r.casts == nil || !r.casts.complete {
		return true
	}
	sb, db := s.base, d.base
	if s.baseKind == kindDomain || d.baseKind == kindDomain {
		return true
	}
	if sb == db {
		return false
	}
	if c, ok := r.casts.casts[[2]uint32{sb, db}]; ok {
		return c.method == 'f' && (c.fn == nil || !procSafeAlone(c.fn))
	}
	if s.elem != 0 && d.elem != 0 {
		c, ok := r.casts.casts[[2]uint32{s.elem, d.elem}]
		return s.elem != d.elem && (!ok || (c.method == 'f' && (c.fn == nil || !procSafeAlone(c.fn))))
	}
	return true
}

// notePresent records that the statement may hold values of type oid: conversions
// of values of unknown type to unsafe types are refused when it holds their
// sources.
func (r *resolver) notePresent(f typeFacts) {
	for _, o := range []uint32{f.oid, f.base, f.elem} {
		if o != 0 {
			r.present[o] = true
		}
	}
}

// checkConditional refuses the statement when a value of unknown type may be
// converted to an unsafe type: when the statement holds values of that type or of
// a type with an unsafe implicit cast to it.
func (r *resolver) checkConditional() {
	for _, t := range r.conditional {
		targets := []uint32{t}
		if f, ok := r.facts[t]; ok {
			targets = append(targets, f.base, f.elem)
		}
		for _, target := range targets {
			if target == 0 {
				continue
			}
			sources := append([]uint32{target}, r.casts.unsafeImplicitFrom[target]...)
			for _, src := range sources {
				if r.present[src] {
					r.refuse(ReasonVolatileCast, fmt.Sprintf("a literal, a parameter or a value of a type not inferred may be read as %s, and the statement holds values of type %s", r.typeName(t), r.typeName(src)))
					return
				}
			}
		}
	}
}

func volatilityWord(v byte) string {
	switch v {
	case 's':
		return " is STABLE"
	case 'v':
		return " is VOLATILE"
	}
	return " is not IMMUTABLE"
}

func (r *resolver) typeName(oid uint32) string {
	if f, ok := r.facts[oid]; ok && f.name != "" {
		return f.name
	}
	if n, ok := builtinTypeNames[oid]; ok {
		return n
	}
	return "type " + strconv.FormatUint(uint64(oid), 10)
}

// builtinTypeNames names the types details mention most, for when their facts were
// not loaded (column types).
var builtinTypeNames = map[uint32]string{
	oidTime: "time without time zone", oidTimetz: "time with time zone", oidMoney: "money", oidXML: "xml",
	oidACLItem: "aclitem", oidText: "text", oidVarchar: "character varying", 2205: "regclass",
}

// unsafeInputTarget reports whether reading a literal or parameter as type oid may
// depend on more than the key.
func (r *resolver) unsafeInputTarget(oid uint32) bool {
	if isUnsafeInput(oid) {
		return true
	}
	f, ok := r.facts[oid]
	if !ok {
		return true
	}
	switch {
	case f.kind == kindComposite, f.baseKind == kindComposite, f.baseKind == kindDomain, f.regType:
		return true
	case f.kind == kindArray || f.kind == kindDomain:
		return isUnsafeInput(f.base) || (f.elem != 0 && isUnsafeInput(f.elem))
	}
	return false
}

// unsafeTarget reports whether converting an argument of another type to a
// parameter of type oid may run a function that is not safe.
func (r *resolver) unsafeTarget(oid uint32) bool {
	if r.casts == nil || !r.casts.complete {
		return true
	}
	bad := func(o uint32) bool { return isUnsafeInput(o) || r.casts.unsafeImplicit[o] }
	if bad(oid) {
		return true
	}
	f, ok := r.facts[oid]
	if !ok {
		return true
	}
	switch f.kind {
	case kindArray:
		return bad(f.elem) || f.regType
	case kindDomain:
		return f.baseKind == kindDomain || f.baseKind == kindComposite || bad(f.base) || (f.elem != 0 && bad(f.elem)) || f.regType
	case kindComposite:
		return true // a row's input runs each field's
	}
	return f.regType
}

func (r *resolver) noteReturns(cands []candidate) {
	for _, c := range cands {
		if f, ok := r.facts[c.ret]; ok {
			r.notePresent(f)
		} else {
			r.present[c.ret] = true
		}
	}
}

// commonRet is the result type of the candidates when they all return the same
// non-polymorphic type.
func (r *resolver) commonRet(cands []candidate) argType {
	ret := cands[0].ret
	for _, c := range cands[1:] {
		if c.ret != ret {
			return argType{}
		}
	}
	f, ok := r.facts[ret]
	if !ok || f.kind == kindPseudo {
		return argType{}
	}
	return argType{typeFacts: f}
}

// resolveOp checks an operator use; uses of an A_Expr are checked once.
func (r *resolver) resolveOp(sc *occScope, u *opUse) *callResult {
	if u.expr != nil {
		if res, ok := sc.opMemo[u.expr]; ok {
			return res
		}
	}
	res := &callResult{reason: ReasonVolatileOperator, detail: u.name.String()}
	if u.expr != nil {
		sc.opMemo[u.expr] = res
	}
	*res = r.checkOp(sc, u)
	return res
}

func (r *resolver) checkOp(sc *occScope, u *opUse) callResult {
	overloads := sc.ops[u.name]
	if len(overloads) == 0 {
		return callResult{reason: ReasonUnknownObject, detail: "operator " + u.name.String()}
	}
	var args []callArg
	var cands []candidate
	if u.prefix {
		args = []callArg{{node: u.right, t: r.typeOf(sc, u.right, u.level, u.vis)}}
		for _, o := range overloads {
			if o.left == 0 {
				cands = append(cands, candidate{proc: o.proc, params: []uint32{o.right}, ret: o.result, builtinOp: o.proc.builtin})
			}
		}
	} else {
		left := callArg{node: u.left, t: r.typeOf(sc, u.left, u.level, u.vis)}
		right := callArg{node: u.right}
		if u.rightElem {
			// x = ANY(array): the operator takes the array's element type.
			if t := r.typeOf(sc, u.right, u.level, u.vis); t.kind == kindArray || (t.kind == kindDomain && t.baseKind == kindArray) {
				if f, ok := r.facts[t.elem]; ok {
					right.t = argType{typeFacts: f}
				}
			}
			right.node = nil // the element, not the array, is the operand
		} else {
			right.t = r.typeOf(sc, u.right, u.level, u.vis)
		}
		args = []callArg{left, right}
		for _, o := range overloads {
			if o.left != 0 && o.right != 0 {
				cands = append(cands, candidate{proc: o.proc, params: []uint32{o.left, o.right}, ret: o.result, builtinOp: o.proc.builtin})
			}
		}
	}
	return r.withParamTypes(args, false, func(args []callArg, unknownParams bool) callResult {
		return r.evalOp(u, slices.Clone(cands), args, unknownParams)
	})
}

// evalOp resolves an operator use for operands of the given types.
func (r *resolver) evalOp(u *opUse, cands []candidate, args []callArg, unknownParams bool) callResult {
	if len(args) == 1 {
		r.exactOnly(&cands, args)
	} else {
		// With one operand of unknown type, PostgreSQL first looks for the
		// operator taking the other operand's type on both sides. A parameter
		// counts as unknown: the driver prepares statements without parameter
		// types, and pgx's modes that declare them do so from Go values (bool,
		// integers, floats, text, bytea, timestamptz, ...), never from a type with
		// an unsafe conversion.
		left, right := args[0], args[1]
		switch {
		case unknownOperand(left) && right.t.concrete():
			r.exactOnly(&cands, []callArg{{t: right.t}, right})
		case unknownOperand(right) && left.t.concrete():
			r.exactOnly(&cands, []callArg{left, {t: left.t}})
		default:
			r.exactOnly(&cands, args)
		}
	}
	cands = r.coercible(cands, args)
	if unknownParams {
		cands = r.unknownArgsCategories(cands, args)
	}
	if len(cands) == 0 {
		return callResult{reason: ReasonUnknownObject, detail: "operator " + u.name.String() + ": no overload takes these operands"}
	}
	r.noteReturns(cands)
	if reason, detail, ok := r.candidatesSafe(cands, args, u.name.String()+" ", ReasonVolatileOperator); !ok {
		return callResult{reason: reason, detail: detail}
	}
	return callResult{ok: true, ret: r.commonRet(cands)}
}

func unknownOperand(a callArg) bool {
	return a.t.oid == oidUnknown || a.node.GetParamRef() != nil
}
