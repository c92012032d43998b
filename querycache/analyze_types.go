package querycache

import (
	"strconv"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// This file types expressions for overload resolution: columns from the catalog,
// literals as the parser types them, explicit casts, whole-row references, and the
// results of calls resolved by analyze_overload.go. What it cannot type is unknown
// (oid 0), which resolution treats as any type.

func builtinType(oid uint32) typeFacts {
	return typeFacts{oid: oid, kind: kindBase, base: oid, baseKind: kindBase}
}

// typeOf returns the type of an expression at a level.
func (r *resolver) typeOf(sc *occScope, n *pg.Node, lvl int, vis visRange) argType {
	if n == nil || n.Node == nil {
		return argType{}
	}
	boolType := argType{typeFacts: builtinType(oidBool)}
	switch x := n.Node.(type) {
	case *pg.Node_ColumnRef:
		ref := x.ColumnRef
		if fields := columnFields(n); fields != nil {
			if occ, col := findColumn(sc, lvl, vis, fields, false); occ >= 0 {
				return argType{typeFacts: sc.rels[occ].columns[col].t}
			}
			if len(fields) == 1 {
				if rel := wholeRow(sc, lvl, vis, fields[0], false); rel != nil {
					return rowType(rel)
				}
			}
			return argType{}
		}
		if len(ref.Fields) == 2 && ref.Fields[1].GetAStar() != nil && ref.Fields[0].GetString_() != nil {
			if rel := wholeRow(sc, lvl, vis, ref.Fields[0].GetString_().Sval, true); rel != nil {
				return rowType(rel)
			}
		}
	case *pg.Node_AConst:
		return argType{typeFacts: constType(x.AConst)}
	case *pg.Node_TypeCast:
		return r.castType(sc, x.TypeCast)
	case *pg.Node_AExpr:
		switch x.AExpr.Kind {
		case pg.A_Expr_Kind_AEXPR_OP:
			q, ok := opName(x.AExpr.Name)
			if !ok {
				return argType{}
			}
			u := &opUse{name: q, left: x.AExpr.Lexpr, right: x.AExpr.Rexpr, prefix: x.AExpr.Lexpr == nil, level: lvl, vis: vis, expr: x.AExpr}
			return r.resolveOp(sc, u).ret
		case pg.A_Expr_Kind_AEXPR_NULLIF:
			return argType{}
		}
		return boolType
	case *pg.Node_FuncCall:
		q, ok := funcQName(x.FuncCall.Funcname)
		if !ok {
			return argType{}
		}
		return r.resolveFunc(sc, &funcUse{call: x.FuncCall, name: q, level: lvl, vis: vis}).ret
	case *pg.Node_BoolExpr, *pg.Node_NullTest, *pg.Node_BooleanTest:
		return boolType
	case *pg.Node_SubLink:
		switch x.SubLink.SubLinkType {
		case pg.SubLinkType_EXISTS_SUBLINK, pg.SubLinkType_ALL_SUBLINK, pg.SubLinkType_ANY_SUBLINK:
			return boolType
		}
	case *pg.Node_CollateClause:
		return r.typeOf(sc, x.CollateClause.Arg, lvl, vis)
	case *pg.Node_CoalesceExpr:
		return r.commonType(sc, x.CoalesceExpr.Args, lvl, vis)
	case *pg.Node_MinMaxExpr:
		return r.commonType(sc, x.MinMaxExpr.Args, lvl, vis)
	}
	return argType{}
}

// rowType is the type of a whole-row reference to a relation: its row type.
func rowType(rel *relInfo) argType {
	t := argType{row: rel}
	if rel.rowType != 0 {
		t.typeFacts = typeFacts{oid: rel.rowType, kind: kindComposite, base: rel.rowType, baseKind: kindComposite}
	}
	return t
}

// commonType is the type of expressions converted to a common type, when they all
// have the same known one (string literals aside); unknown otherwise.
func (r *resolver) commonType(sc *occScope, ns []*pg.Node, lvl int, vis visRange) argType {
	var common argType
	for _, n := range ns {
		t := r.typeOf(sc, n, lvl, vis)
		switch {
		case t.oid == oidUnknown:
		case !t.concrete():
			return argType{}
		case common.oid == 0:
			common = t
		case common.oid != t.oid:
			return argType{}
		}
	}
	return common
}

// constType is the type PostgreSQL gives a literal (make_const).
func constType(c *pg.A_Const) typeFacts {
	if c.Isnull {
		return typeFacts{oid: oidUnknown}
	}
	switch v := c.Val.(type) {
	case *pg.A_Const_Ival:
		return builtinType(oidInt4)
	case *pg.A_Const_Boolval:
		return builtinType(oidBool)
	case *pg.A_Const_Sval:
		return typeFacts{oid: oidUnknown}
	case *pg.A_Const_Fval:
		// An integer too large for the grammar's int4 is int8 when it fits, and
		// numeric otherwise; so is anything with a point or an exponent. Other
		// spellings (hex, underscores) are left unknown.
		s := v.Fval.GetFval()
		digits := s
		if len(digits) > 0 && digits[0] == '-' {
			digits = digits[1:]
		}
		if digits != "" && isDigits(digits) {
			n, err := strconv.ParseInt(s, 10, 64)
			switch {
			case err != nil:
				return builtinType(oidNumeric)
			case n == int64(int32(n)):
				return builtinType(oidInt4)
			default:
				return builtinType(oidInt8)
			}
		}
		if isDecimal(digits) {
			return builtinType(oidNumeric)
		}
	}
	return typeFacts{}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isDecimal reports whether s is digits with a point and/or an exponent.
func isDecimal(s string) bool {
	seen := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			seen = true
		case c == '.', c == 'e', c == 'E', c == '+', c == '-':
		default:
			return false
		}
	}
	return seen
}

// castType is the type an explicit cast gives.
func (r *resolver) castType(sc *occScope, tc *pg.TypeCast) argType {
	q, ok := typeQName(tc.TypeName)
	if !ok {
		return argType{}
	}
	t := sc.types[q]
	if !t.found {
		return argType{}
	}
	if len(tc.TypeName.ArrayBounds) > 0 {
		if f, ok := r.facts[t.array]; ok && t.array != 0 {
			return argType{typeFacts: f}
		}
		return argType{}
	}
	return argType{typeFacts: t.facts}
}

// wholeRow resolves a name used as a value to the relation it names (a whole-row
// reference), as PostgreSQL does when no column of that name is visible: name.* when
// qualified, name alone otherwise. Nil when not certain.
func wholeRow(sc *occScope, lvl int, vis visRange, name string, qualified bool) *relInfo {
	if lvl < 0 || lvl >= len(sc.st.levels) {
		return nil
	}
	if !qualified {
		// A column of that name at this level or any outer one wins.
		for l, v := lvl, vis; l >= 0; l, v = sc.st.levels[l].parent, visAll {
			for i, it := range sc.st.levels[l].items {
				if !v.has(i) {
					continue
				}
				if it.occ < 0 {
					return nil
				}
				info := sc.rels[it.occ]
				if info == nil || !info.found {
					return nil
				}
				if _, ok := info.columns[name]; ok {
					return nil
				}
			}
		}
	}
	found := -1
	for i, it := range sc.st.levels[lvl].items {
		if !vis.has(i) || it.binding != name {
			continue
		}
		if it.occ < 0 || found >= 0 {
			return nil
		}
		found = it.occ
	}
	if found < 0 || sc.rels[found] == nil || !sc.rels[found].found {
		return nil
	}
	return sc.rels[found]
}
