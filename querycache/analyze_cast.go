package querycache

import (
	pg "github.com/pganalyze/pg_query_go/v6"
)

// This file checks explicit casts (x::t, CAST, and f(x) where f names a type), which
// run the cast's function, or the output function of the value's type and the input
// function of the target, or for a literal or parameter only the target's input
// function.

// unsafeOutput reports whether a type's text output depends on more than the key.
func unsafeOutput(f typeFacts) bool {
	for _, o := range []uint32{f.oid, f.base, f.elem} {
		if o == oidMoney || o == oidACLItem || regTypeOIDs[o] {
			return true
		}
	}
	return f.kind == kindComposite || f.baseKind == kindComposite || f.regType
}

// checkCast refuses an explicit cast whose result may depend on more than the key.
func (r *resolver) checkCast(sc *occScope, c *castUse) {
	t, ok := sc.types[c.typ]
	if !ok || !t.found {
		r.refuse(ReasonUnknownObject, "type "+c.typ.String())
		return
	}
	dst := t.facts
	name := c.typ.String()
	if c.array {
		f, ok := r.facts[t.array]
		if t.array == 0 || !ok {
			r.refuse(ReasonUnknownObject, "type "+name+"[]")
			return
		}
		dst, name = f, name+"[]"
	}
	r.notePresent(dst)
	src := r.typeOf(sc, c.arg, c.level, c.vis)
	if reason, detail, ok := r.castSafe(c.arg, src, dst, name); !ok {
		r.refuse(reason, detail)
	}
}

// castSafe checks the explicit conversion of arg (of type src) to dst, named name in
// details. The conversion runs the cast's function, or the output function of src
// and the input function of dst, or, for a literal or a parameter, only the input
// function of dst.
func (r *resolver) castSafe(arg *pg.Node, src argType, dst typeFacts, name string) (Reason, string, bool) {
	refuse := func(why string) (Reason, string, bool) { return ReasonVolatileCast, "to " + name + why, false }
	if dst.regType {
		return refuse("")
	}
	if src.concrete() && src.oid == dst.oid {
		return ReasonNone, "", true
	}
	if isUnsafeInput(dst.oid) || isUnsafeInput(dst.base) || (dst.elem != 0 && isUnsafeInput(dst.elem)) {
		return refuse("")
	}
	composite := dst.kind == kindComposite || dst.baseKind == kindComposite
	if src.oid == oidUnknown || (arg != nil && arg.GetParamRef() != nil) {
		// Input only. Literals such as 'now' are refused by the parser half,
		// arguments such as "now" by Plan.Key.
		if composite {
			return refuse(": a row's input runs each field's")
		}
		return ReasonNone, "", true
	}
	if !src.concrete() {
		switch {
		case dst.dateTime:
			return refuse(" from an expression that may be text")
		case src.row != nil || composite:
			return refuse(" from a row")
		case r.casts == nil || !r.casts.complete || r.casts.unsafeInto[dst.oid] || r.casts.unsafeInto[dst.base]:
			return refuse(" from an expression of unknown type")
		}
		return ReasonNone, "", true
	}
	return r.knownCastSafe(src.typeFacts, dst, name)
}

// knownCastSafe checks a conversion between two known types.
func (r *resolver) knownCastSafe(s, d typeFacts, name string) (Reason, string, bool) {
	refuse := func(why string) (Reason, string, bool) { return ReasonVolatileCast, "to " + name + why, false }
	if s.baseKind == kindDomain || d.baseKind == kindDomain {
		return refuse(": a domain over a domain")
	}
	sb, db := s.base, d.base
	if sb == db {
		return ReasonNone, "", true
	}
	if d.dateTime && !s.dateTime {
		return refuse(" from an expression that may be text")
	}
	if r.casts == nil || !r.casts.complete {
		return refuse(": casts not known")
	}
	if c, ok := r.casts.casts[[2]uint32{sb, db}]; ok {
		switch c.method {
		case 'f':
			if c.fn == nil || !procSafeAlone(c.fn) {
				sig := "an unknown function"
				if c.fn != nil {
					sig = c.fn.signature
				}
				return refuse(": runs " + sig)
			}
		case 'i':
			if unsafeOutput(s) {
				return refuse(": the source's text output depends on settings or the catalog")
			}
		}
		return ReasonNone, "", true
	}
	// No cast: arrays convert element by element, anything else through text.
	if s.elem != 0 && d.elem != 0 {
		c, ok := r.casts.casts[[2]uint32{s.elem, d.elem}]
		switch {
		case s.elem == d.elem:
		case ok && c.method == 'f' && (c.fn == nil || !procSafeAlone(c.fn)):
			return refuse(": the element cast is not safe")
		case !ok && (regTypeOIDs[s.elem] || s.elem == oidMoney || isUnsafeInput(d.elem) || (dateTimeOIDs[d.elem] && !dateTimeOIDs[s.elem])):
			return refuse(": the element conversion is not safe")
		}
		return ReasonNone, "", true
	}
	if unsafeOutput(s) {
		return refuse(": the source's text output depends on settings or the catalog")
	}
	return ReasonNone, "", true
}
