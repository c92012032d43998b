package querycache

import (
	"fmt"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"github.com/zeebo/xxh3"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// This file is the first, catalog-free half of the analysis: what the statement text
// alone says. Its result (stmt) is the same for every session and is cached per text;
// resolve.go completes it with a session's catalog.

// maxDepth bounds the nesting of queries and expressions the walker follows. Deeper
// statements are refused rather than risking the stack.
const maxDepth = 200

// qname is a possibly schema-qualified name as written; schema "" means "through the
// search_path".
type qname struct{ schema, name string }

func (q qname) String() string {
	if q.schema == "" {
		return q.name
	}
	return q.schema + "." + q.name
}

// stmt is the catalog-free analysis of one statement text.
type stmt struct {
	reason       Reason // first refusal found, ReasonNone if none
	detail       string // what caused it, in words
	directives   Directives
	directiveErr error
	fingerprint  uint64
	textHash     xxh3.Uint128
	numParams    int  // highest $n
	createsTemp  bool // creates a temporary object (see Plan.CreatesTemp)
	setsOnly     bool // SET, RESET or SHOW: session settings, no data
	occs         []*occurrence
	levels       []*level
	conjuncts    []*conjunct
	funcs        []qname // distinct names of calls
	calls        []*funcUse
	ops          []*opUse
	casts        []*castUse
	bareStrings  bool // a string literal without an explicit cast somewhere
	// unifies: the statement converts values of types the analyzer does not
	// follow to a common type (VALUES lists, set operations), which may run
	// implicit casts of those types. unifySites are the conversions whose values
	// it can type (CASE, COALESCE, GREATEST, ARRAY[], IN lists).
	unifies    bool
	unifySites []*unifySite
}

// unifySite is a group of expressions converted to a common type.
type unifySite struct {
	nodes []*pg.Node
	level int
	vis   visRange
}

// occurrence is one FROM item naming a relation (a table, view, ... or, after
// resolution, nothing cacheable).
type occurrence struct {
	name     qname
	inh      bool   // not ONLY: inheritance children are read too
	binding  string // the name columns are qualified with: the alias, else the relation name
	aliased  bool
	level    int
	nullable bool // NULL-extended by an outer join at the level's WHERE
}

// level is one query level (a SELECT's FROM list): what names are visible there.
type level struct {
	items []fromItem
	// parent is the level whose names this one can also see (-1: none). It may
	// be a level PostgreSQL would not search (CTEs): code that must be sure a
	// name is not visible from outer levels checks them all.
	parent int
}

// visRange is the part of a level's FROM items an expression can see: JOIN ... ON
// sees only the join's own items, a function in FROM only the items before it.
// hi < 0: every item.
type visRange struct{ lo, hi int }

var visAll = visRange{hi: -1}

func (v visRange) has(i int) bool { return i >= v.lo && (v.hi < 0 || i < v.hi) }

// fromItem is a binding visible at a level: a relation occurrence (occ >= 0) or
// something else (a subquery, function, CTE or VALUES: occ == -1).
type fromItem struct {
	binding string
	occ     int
}

type predKind uint8

const (
	predEq     predKind = iota // col = v
	predIn                     // col IN (v, ...)
	predAny                    // col = ANY($n) or = ANY(ARRAY[...])
	predIsNull                 // col IS NULL
)

// conjunct is a top-level conjunct of a WHERE or ON clause that may restrict the
// rows of one relation: column = value and its friends.
type conjunct struct {
	level   int
	fields  []string // the column reference as written: [col], [rel, col], [schema, rel, col]
	kind    predKind
	values  []valueSrc // eq: one; in/any-array: several; any-param: one param of array type
	targets []target   // occurrences the conjunct may restrict
}

type target struct {
	occ         int
	allowIsNull bool // false on the nullable side of an outer join below the clause
}

type valueKind uint8

const (
	valParam valueKind = iota
	valInt
	valNumeric
	valString
	valBool
	valNull
)

// valueSrc is where a predicate's value comes from: a parameter or a literal.
type valueSrc struct {
	kind  valueKind
	param int    // valParam: 1-based
	text  string // literals: as written
	cast  *qname // explicit cast on the value, nil if none
}

// opUse is one use of an operator, with its operands where they are known, for
// overload resolution.
type opUse struct {
	name        qname
	left, right *pg.Node // nil: not known (or no left operand for a prefix operator)
	prefix      bool     // a prefix operator: only right
	rightElem   bool     // = ANY/ALL (right): the operand is an element of right
	level       int
	vis         visRange
	expr        *pg.A_Expr // the expression, when the use is exactly one (checked once)
}

// funcUse is one function call.
type funcUse struct {
	call  *pg.FuncCall
	name  qname
	level int
	vis   visRange
}

type castUse struct {
	typ   qname
	array bool // a cast to an array of typ
	arg   *pg.Node
	level int
	vis   visRange
}

// parseStatement analyzes a statement text without a catalog.
func parseStatement(sql string) *stmt {
	st := &stmt{textHash: xxh3.HashString128(sql)}
	tree, err := pg.Parse(sql)
	if err != nil {
		st.refuse(ReasonParseError, err.Error())
		return st
	}
	st.readComments(sql)
	if len(tree.Stmts) == 0 {
		st.refuse(ReasonEmpty, "")
		return st
	}
	if len(tree.Stmts) > 1 {
		for _, raw := range tree.Stmts {
			st.noteTemp(raw.Stmt)
		}
		st.refuse(ReasonMultiStatement, fmt.Sprintf("%d statements", len(tree.Stmts)))
		return st
	}
	if fp, err := pg.FingerprintToUInt64(sql); err == nil {
		st.fingerprint = fp
	}
	if st.directives.Off {
		st.refuse(ReasonDirectiveOff, "")
	}
	node := tree.Stmts[0].Stmt
	sel := node.GetSelectStmt()
	if sel == nil {
		st.noteTemp(node)
		st.setsOnly = node.GetVariableSetStmt() != nil || node.GetVariableShowStmt() != nil
		st.refuse(ReasonNotSelect, statementKind(node))
		return st
	}
	if sel.IntoClause != nil {
		st.refuse(ReasonSelectInto, "")
		if sel.IntoClause.Rel != nil && sel.IntoClause.Rel.Relpersistence == "t" {
			st.createsTemp = true
		}
		return st
	}
	w := walker{st: st, cur: -1, vis: visAll}
	w.selectStmt(sel, nil)
	return st
}

func (st *stmt) refuse(r Reason, detail string) {
	if st.reason == ReasonNone {
		st.reason, st.detail = r, detail
	}
}

// readComments extracts the directives from the statement's comments.
func (st *stmt) readComments(sql string) {
	if !strings.Contains(sql, directivePrefix) {
		return
	}
	scan, err := pg.Scan(sql)
	if err != nil {
		return
	}
	var comments []string
	for _, tok := range scan.Tokens {
		if tok.Token == pg.Token_C_COMMENT || tok.Token == pg.Token_SQL_COMMENT {
			if int(tok.Start) < int(tok.End) && int(tok.End) <= len(sql) {
				comments = append(comments, sql[tok.Start:tok.End])
			}
		}
	}
	st.directives, st.directiveErr = parseDirectives(comments)
}

// noteTemp records statements that create temporary objects, which may shadow the
// names later statements of the session use.
func (st *stmt) noteTemp(n *pg.Node) {
	var rv *pg.RangeVar
	switch {
	case n.GetCreateStmt() != nil:
		rv = n.GetCreateStmt().Relation
	case n.GetCreateTableAsStmt() != nil && n.GetCreateTableAsStmt().Into != nil:
		rv = n.GetCreateTableAsStmt().Into.Rel
	case n.GetViewStmt() != nil:
		rv = n.GetViewStmt().View
	case n.GetCreateSeqStmt() != nil:
		rv = n.GetCreateSeqStmt().Sequence
	case n.GetSelectStmt() != nil && n.GetSelectStmt().IntoClause != nil:
		rv = n.GetSelectStmt().IntoClause.Rel
	}
	if rv != nil && (rv.Relpersistence == "t" || strings.HasPrefix(rv.Schemaname, "pg_temp")) {
		st.createsTemp = true
	}
}

// statementKind names a statement's node type for explain, e.g. "InsertStmt".
func statementKind(n *pg.Node) string {
	if n == nil || n.Node == nil {
		return ""
	}
	name := string(n.ProtoReflect().WhichOneof(n.ProtoReflect().Descriptor().Oneofs().Get(0)).Message().Name())
	return name
}

// cteScope is the chain of WITH names visible at a point of the statement.
type cteScope struct {
	names  map[string]bool
	parent *cteScope
}

func (s *cteScope) has(name string) bool {
	for ; s != nil; s = s.parent {
		if s.names[name] {
			return true
		}
	}
	return false
}

type walker struct {
	st    *stmt
	depth int
	cur   int      // the level being walked, -1 outside any
	vis   visRange // what expressions of cur can see
}

func (w *walker) enter() bool {
	w.depth++
	if w.depth > maxDepth {
		w.st.refuse(ReasonUnsupported, "nesting too deep")
		return false
	}
	return true
}

func (w *walker) leave() { w.depth-- }

// selectStmt walks one query. Predicates found in its WHERE apply to its own level only.
func (w *walker) selectStmt(s *pg.SelectStmt, scope *cteScope) {
	if s == nil || !w.enter() {
		return
	}
	defer w.leave()
	if len(s.LockingClause) > 0 {
		w.st.refuse(ReasonLocking, "")
	}
	if s.IntoClause != nil {
		w.st.refuse(ReasonSelectInto, "")
	}
	if wc := s.WithClause; wc != nil {
		inner := &cteScope{names: map[string]bool{}, parent: scope}
		if wc.Recursive {
			for _, c := range wc.Ctes {
				if cte := c.GetCommonTableExpr(); cte != nil {
					inner.names[cte.Ctename] = true
				}
			}
		}
		for _, c := range wc.Ctes {
			cte := c.GetCommonTableExpr()
			if cte == nil {
				continue
			}
			q := cte.Ctequery.GetSelectStmt()
			if q == nil {
				w.st.refuse(ReasonWritableCTE, cte.Ctename)
			} else {
				w.selectStmt(q, inner)
			}
			inner.names[cte.Ctename] = true
		}
		scope = inner
	}
	if s.Op != pg.SetOperation_SETOP_NONE && s.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		w.st.unifies = true
		w.selectStmt(s.Larg, scope)
		w.selectStmt(s.Rarg, scope)
		w.nodes(s.SortClause, scope, -1)
		w.node(s.LimitOffset, scope, -1)
		w.node(s.LimitCount, scope, -1)
		return
	}
	lvl := len(w.st.levels)
	w.st.levels = append(w.st.levels, &level{parent: w.cur})
	savedCur, savedVis := w.cur, w.vis
	w.cur, w.vis = lvl, visAll
	defer func() { w.cur, w.vis = savedCur, savedVis }()
	if len(s.ValuesLists) > 1 {
		w.st.unifies = true
	}
	var top []target
	for _, item := range s.FromClause {
		top = append(top, w.fromItem(item, scope, lvl)...)
	}
	if s.WhereClause != nil {
		targets := make([]target, len(top))
		for i, t := range top {
			targets[i] = target{occ: t.occ, allowIsNull: !w.st.occs[t.occ].nullable}
		}
		w.conjuncts(s.WhereClause, lvl, targets)
		w.node(s.WhereClause, scope, lvl)
	}
	w.nodes(s.ValuesLists, scope, lvl)
	w.nodes(s.TargetList, scope, lvl)
	w.nodes(s.DistinctClause, scope, lvl)
	w.nodes(s.GroupClause, scope, lvl)
	w.node(s.HavingClause, scope, lvl)
	w.nodes(s.WindowClause, scope, lvl)
	w.nodes(s.SortClause, scope, lvl)
	w.node(s.LimitOffset, scope, lvl)
	w.node(s.LimitCount, scope, lvl)
}

// fromItem walks one FROM item of level lvl and returns the relation occurrences
// under it, with allowIsNull false for those NULL-extended by an outer join inside it.
func (w *walker) fromItem(n *pg.Node, scope *cteScope, lvl int) []target {
	if n == nil || !w.enter() {
		return nil
	}
	defer w.leave()
	L := w.st.levels[lvl]
	switch x := n.Node.(type) {
	case *pg.Node_RangeVar:
		rv := x.RangeVar
		binding := rv.Relname
		if rv.Alias != nil {
			binding = rv.Alias.Aliasname
		}
		if rv.Schemaname == "" && rv.Catalogname == "" && scope.has(rv.Relname) {
			L.items = append(L.items, fromItem{binding: binding, occ: -1})
			return nil
		}
		occ := len(w.st.occs)
		w.st.occs = append(w.st.occs, &occurrence{
			name:    qname{rv.Schemaname, rv.Relname},
			inh:     rv.Inh,
			binding: binding,
			aliased: rv.Alias != nil,
			level:   lvl,
		})
		L.items = append(L.items, fromItem{binding: binding, occ: occ})
		return []target{{occ: occ, allowIsNull: true}}
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		start := len(L.items)
		left := w.fromItem(j.Larg, scope, lvl)
		right := w.fromItem(j.Rarg, scope, lvl)
		var restricted []target
		switch j.Jointype {
		case pg.JoinType_JOIN_INNER:
			restricted = append(append(restricted, left...), right...)
		case pg.JoinType_JOIN_LEFT:
			restricted = right
		case pg.JoinType_JOIN_RIGHT:
			restricted = left
		}
		if j.Quals != nil {
			w.conjuncts(j.Quals, lvl, restricted)
			saved := w.vis
			w.vis = visRange{lo: start, hi: len(L.items)}
			w.node(j.Quals, scope, lvl)
			w.vis = saved
		}
		if j.Alias != nil {
			L.items = append(L.items, fromItem{binding: j.Alias.Aliasname, occ: -1})
		}
		nullable := func(ts []target) []target {
			out := make([]target, len(ts))
			for i, t := range ts {
				w.st.occs[t.occ].nullable = true
				out[i] = target{occ: t.occ}
			}
			return out
		}
		switch j.Jointype {
		case pg.JoinType_JOIN_LEFT:
			right = nullable(right)
		case pg.JoinType_JOIN_RIGHT:
			left = nullable(left)
		case pg.JoinType_JOIN_FULL:
			left, right = nullable(left), nullable(right)
		}
		return append(left, right...)
	case *pg.Node_RangeSubselect:
		if x.RangeSubselect.Alias != nil {
			L.items = append(L.items, fromItem{binding: x.RangeSubselect.Alias.Aliasname, occ: -1})
		} else {
			L.items = append(L.items, fromItem{occ: -1})
		}
		w.node(x.RangeSubselect.Subquery, scope, lvl)
		return nil
	case *pg.Node_RangeFunction:
		binding := ""
		if x.RangeFunction.Alias != nil {
			binding = x.RangeFunction.Alias.Aliasname
		}
		saved := w.vis
		w.vis = visRange{lo: 0, hi: len(L.items)} // functions in FROM see the items before them
		L.items = append(L.items, fromItem{binding: binding, occ: -1})
		w.nodes(x.RangeFunction.Functions, scope, lvl)
		w.vis = saved
		return nil
	case *pg.Node_RangeTableSample:
		w.st.refuse(ReasonUnsupported, "TABLESAMPLE")
	case *pg.Node_RangeTableFunc:
		w.st.refuse(ReasonUnsupported, "XMLTABLE")
	case *pg.Node_JsonTable:
		w.st.refuse(ReasonUnsupported, "JSON_TABLE")
	default:
		w.st.refuse(ReasonUnsupported, "FROM item "+statementKind(n))
	}
	L.items = append(L.items, fromItem{occ: -1})
	return nil
}

// conjuncts records the top-level conjuncts of a WHERE or ON clause that compare a
// column with a value. Anything else is skipped: skipping a conjunct only widens
// what an entry depends on, never narrows it.
func (w *walker) conjuncts(n *pg.Node, lvl int, targets []target) {
	if n == nil || len(targets) == 0 {
		return
	}
	if b := n.GetBoolExpr(); b != nil {
		if b.Boolop == pg.BoolExprType_AND_EXPR {
			for _, a := range b.Args {
				w.conjuncts(a, lvl, targets)
			}
		}
		return
	}
	c := &conjunct{level: lvl, targets: targets}
	switch {
	case n.GetAExpr() != nil:
		e := n.GetAExpr()
		if !isEqualsName(e.Name) {
			return
		}
		col, other := e.Lexpr, e.Rexpr
		if columnFields(col) == nil && e.Kind == pg.A_Expr_Kind_AEXPR_OP {
			col, other = other, col
		}
		c.fields = columnFields(col)
		if c.fields == nil {
			return
		}
		switch e.Kind {
		case pg.A_Expr_Kind_AEXPR_OP:
			v, ok := valueOf(other)
			if !ok {
				return
			}
			c.kind, c.values = predEq, []valueSrc{v}
		case pg.A_Expr_Kind_AEXPR_IN:
			list := other.GetList()
			if list == nil || len(list.Items) == 0 {
				return
			}
			for _, item := range list.Items {
				v, ok := valueOf(item)
				if !ok {
					return
				}
				c.values = append(c.values, v)
			}
			c.kind = predIn
		case pg.A_Expr_Kind_AEXPR_OP_ANY:
			if p := paramOf(other); p > 0 {
				c.kind, c.values = predAny, []valueSrc{{kind: valParam, param: p}}
				break
			}
			arr := other.GetAArrayExpr()
			if arr == nil || len(arr.Elements) == 0 {
				return
			}
			for _, item := range arr.Elements {
				v, ok := valueOf(item)
				if !ok {
					return
				}
				c.values = append(c.values, v)
			}
			c.kind = predIn
		default:
			return
		}
	case n.GetNullTest() != nil:
		t := n.GetNullTest()
		if t.Nulltesttype != pg.NullTestType_IS_NULL || t.Argisrow {
			return
		}
		c.fields = columnFields(t.Arg)
		if c.fields == nil {
			return
		}
		c.kind, c.values = predIsNull, []valueSrc{{kind: valNull}}
	default:
		return
	}
	w.st.conjuncts = append(w.st.conjuncts, c)
}

// isEqualsName reports whether an operator name is "=" or pg_catalog.=.
func isEqualsName(name []*pg.Node) bool {
	switch len(name) {
	case 1:
		return name[0].GetString_().GetSval() == "="
	case 2:
		return name[0].GetString_().GetSval() == "pg_catalog" && name[1].GetString_().GetSval() == "="
	}
	return false
}

// columnFields returns the names of a plain column reference, nil for anything else
// (expressions, casts, collations, whole-row references).
func columnFields(n *pg.Node) []string {
	ref := n.GetColumnRef()
	if ref == nil || len(ref.Fields) == 0 || len(ref.Fields) > 3 {
		return nil
	}
	out := make([]string, len(ref.Fields))
	for i, f := range ref.Fields {
		s := f.GetString_()
		if s == nil {
			return nil
		}
		out[i] = s.Sval
	}
	return out
}

func paramOf(n *pg.Node) int {
	if p := n.GetParamRef(); p != nil && p.Number > 0 {
		return int(p.Number)
	}
	if tc := n.GetTypeCast(); tc != nil {
		if p := tc.Arg.GetParamRef(); p != nil && p.Number > 0 && len(tc.TypeName.GetArrayBounds()) > 0 {
			return int(p.Number)
		}
	}
	return 0
}

// valueOf returns the value source of a predicate's value side: a parameter or a
// literal, optionally with an explicit cast.
func valueOf(n *pg.Node) (valueSrc, bool) {
	var cast *qname
	if tc := n.GetTypeCast(); tc != nil {
		if tc.TypeName == nil || len(tc.TypeName.ArrayBounds) > 0 || tc.TypeName.Setof || tc.TypeName.PctType {
			return valueSrc{}, false
		}
		q, ok := typeQName(tc.TypeName)
		if !ok {
			return valueSrc{}, false
		}
		cast = &q
		n = tc.Arg
	}
	if p := n.GetParamRef(); p != nil && p.Number > 0 {
		return valueSrc{kind: valParam, param: int(p.Number), cast: cast}, true
	}
	c := n.GetAConst()
	if c == nil {
		return valueSrc{}, false
	}
	if c.Isnull {
		return valueSrc{kind: valNull, cast: cast}, true
	}
	switch v := c.Val.(type) {
	case *pg.A_Const_Ival:
		return valueSrc{kind: valInt, text: fmt.Sprint(v.Ival.GetIval()), cast: cast}, true
	case *pg.A_Const_Fval:
		return valueSrc{kind: valNumeric, text: v.Fval.GetFval(), cast: cast}, true
	case *pg.A_Const_Sval:
		return valueSrc{kind: valString, text: v.Sval.GetSval(), cast: cast}, true
	case *pg.A_Const_Boolval:
		t := "f"
		if v.Boolval.GetBoolval() {
			t = "t"
		}
		return valueSrc{kind: valBool, text: t, cast: cast}, true
	}
	return valueSrc{}, false
}

// typeQName returns the name of a (non-array) type as written.
func typeQName(t *pg.TypeName) (qname, bool) { return funcQName(t.GetNames()) }

// opName returns an operator's name as written (OPERATOR(schema.op) or op).
func opName(name []*pg.Node) (qname, bool) {
	switch len(name) {
	case 1:
		return qname{name: name[0].GetString_().GetSval()}, true
	case 2:
		return qname{schema: name[0].GetString_().GetSval(), name: name[1].GetString_().GetSval()}, true
	}
	return qname{}, false
}

func (w *walker) nodes(ns []*pg.Node, scope *cteScope, lvl int) {
	for _, n := range ns {
		w.node(n, scope, lvl)
	}
}

// node walks an expression (or anything else) for what matters to cacheability:
// subqueries, functions, operators, casts, literals and parameters.
func (w *walker) node(n *pg.Node, scope *cteScope, lvl int) {
	if n == nil || n.Node == nil || !w.enter() {
		return
	}
	defer w.leave()
	st := w.st
	switch x := n.Node.(type) {
	case *pg.Node_SelectStmt:
		w.selectStmt(x.SelectStmt, scope)
		return
	case *pg.Node_FuncCall:
		if q, ok := funcQName(x.FuncCall.Funcname); ok {
			st.addFunc(q)
			st.calls = append(st.calls, &funcUse{call: x.FuncCall, name: q, level: lvl, vis: w.vis})
		} else {
			st.refuse(ReasonUnsupported, "function name")
		}
	case *pg.Node_AExpr:
		w.aExpr(x.AExpr, lvl)
	case *pg.Node_SubLink:
		if len(x.SubLink.OperName) > 0 {
			if q, ok := opName(x.SubLink.OperName); ok {
				st.ops = append(st.ops, &opUse{name: q, left: x.SubLink.Testexpr, level: lvl, vis: w.vis})
			}
		}
	case *pg.Node_TypeCast:
		tc := x.TypeCast
		q, ok := typeQName(tc.TypeName)
		if !ok || tc.TypeName.Setof || tc.TypeName.PctType {
			st.refuse(ReasonUnsupported, "type name")
			return
		}
		st.casts = append(st.casts, &castUse{typ: q, array: len(tc.TypeName.ArrayBounds) > 0, arg: tc.Arg, level: lvl, vis: w.vis})
		if c := tc.Arg.GetAConst(); c != nil {
			w.literal(c, false)
			return
		}
	case *pg.Node_AConst:
		w.literal(x.AConst, true)
		return
	case *pg.Node_ParamRef:
		if int(x.ParamRef.Number) > st.numParams {
			st.numParams = int(x.ParamRef.Number)
		}
		return
	case *pg.Node_SqlvalueFunction:
		switch x.SqlvalueFunction.Op {
		case pg.SQLValueFunctionOp_SVFOP_CURRENT_USER, pg.SQLValueFunctionOp_SVFOP_CURRENT_ROLE,
			pg.SQLValueFunctionOp_SVFOP_USER:
			// current_user: Identity.Role, which is in the key.
		case pg.SQLValueFunctionOp_SVFOP_CURRENT_CATALOG:
			// current_database(): Identity.Database, in the key.
		default:
			// The clock, session_user (which SET ROLE does not change while
			// current_user does), current_schema (which depends on which
			// schemas exist).
			st.refuse(ReasonVolatileFunction, sqlValueFunctionName(x.SqlvalueFunction.Op))
		}
		return
	case *pg.Node_LockingClause:
		st.refuse(ReasonLocking, "")
		return
	case *pg.Node_CaseExpr:
		site := &unifySite{level: lvl, vis: w.vis}
		for _, a := range x.CaseExpr.Args {
			if cw := a.GetCaseWhen(); cw != nil {
				site.nodes = append(site.nodes, cw.Result)
			}
		}
		if x.CaseExpr.Defresult != nil {
			site.nodes = append(site.nodes, x.CaseExpr.Defresult)
		}
		st.unifySites = append(st.unifySites, site)
		if x.CaseExpr.Arg != nil {
			for _, a := range x.CaseExpr.Args {
				if cw := a.GetCaseWhen(); cw != nil {
					st.ops = append(st.ops, &opUse{name: qname{name: "="}, left: x.CaseExpr.Arg, right: cw.Expr, level: lvl, vis: w.vis})
				}
			}
		}
	case *pg.Node_CoalesceExpr:
		st.unifySites = append(st.unifySites, &unifySite{nodes: x.CoalesceExpr.Args, level: lvl, vis: w.vis})
	case *pg.Node_MinMaxExpr:
		st.unifySites = append(st.unifySites, &unifySite{nodes: x.MinMaxExpr.Args, level: lvl, vis: w.vis})
	case *pg.Node_AArrayExpr:
		st.unifySites = append(st.unifySites, &unifySite{nodes: x.AArrayExpr.Elements, level: lvl, vis: w.vis})
	case *pg.Node_SortBy:
		// Operands are not resolved: ORDER BY names may be output columns.
		if len(x.SortBy.UseOp) > 0 {
			if q, ok := opName(x.SortBy.UseOp); ok {
				st.ops = append(st.ops, &opUse{name: q, level: lvl, vis: w.vis})
			}
		}
	case *pg.Node_RangeVar, *pg.Node_JoinExpr, *pg.Node_RangeSubselect, *pg.Node_RangeFunction,
		*pg.Node_RangeTableSample, *pg.Node_RangeTableFunc, *pg.Node_JsonTable:
		// FROM items outside a FROM clause do not occur in SELECT; refuse rather
		// than miss a relation.
		st.refuse(ReasonUnsupported, statementKind(n))
		return
	case *pg.Node_XmlExpr, *pg.Node_XmlSerialize:
		// XML functions are stable (they depend on xmloption and the like).
		st.refuse(ReasonVolatileFunction, "XML function")
		return
	case *pg.Node_JsonParseExpr, *pg.Node_JsonScalarExpr, *pg.Node_JsonSerializeExpr,
		*pg.Node_JsonObjectConstructor, *pg.Node_JsonArrayConstructor,
		*pg.Node_JsonArrayQueryConstructor, *pg.Node_JsonObjectAgg, *pg.Node_JsonArrayAgg,
		*pg.Node_JsonFuncExpr, *pg.Node_JsonIsPredicate:
		// SQL/JSON constructors call the output functions of arbitrary types.
		st.refuse(ReasonVolatileFunction, "SQL/JSON function")
		return
	}
	w.children(n.ProtoReflect(), scope, lvl)
}

// children walks every message field of m generically.
func (w *walker) children(m protoreflect.Message, scope *cteScope, lvl int) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				w.message(l.Get(i).Message(), scope, lvl)
			}
			return true
		}
		if fd.IsMap() {
			return true
		}
		w.message(v.Message(), scope, lvl)
		return true
	})
}

func (w *walker) message(m protoreflect.Message, scope *cteScope, lvl int) {
	if node, ok := m.Interface().(*pg.Node); ok {
		w.node(node, scope, lvl)
		return
	}
	if !w.enter() {
		return
	}
	defer w.leave()
	if sel, ok := m.Interface().(*pg.SelectStmt); ok {
		w.selectStmt(sel, scope)
		return
	}
	w.children(m, scope, lvl)
}

func (w *walker) aExpr(e *pg.A_Expr, lvl int) {
	add := func(name string, left, right *pg.Node) {
		w.st.ops = append(w.st.ops, &opUse{name: qname{name: name}, left: left, right: right, level: lvl, vis: w.vis})
	}
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_BETWEEN, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN,
		pg.A_Expr_Kind_AEXPR_BETWEEN_SYM, pg.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM:
		add(">=", e.Lexpr, nil)
		add("<=", e.Lexpr, nil)
		return
	case pg.A_Expr_Kind_AEXPR_DISTINCT, pg.A_Expr_Kind_AEXPR_NOT_DISTINCT, pg.A_Expr_Kind_AEXPR_NULLIF:
		add("=", e.Lexpr, e.Rexpr)
		return
	}
	q, ok := opName(e.Name)
	if !ok {
		w.st.refuse(ReasonUnsupported, "operator name")
		return
	}
	u := &opUse{name: q, level: lvl, vis: w.vis}
	if e.Kind == pg.A_Expr_Kind_AEXPR_OP {
		u.expr = e
	}
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP, pg.A_Expr_Kind_AEXPR_LIKE, pg.A_Expr_Kind_AEXPR_ILIKE, pg.A_Expr_Kind_AEXPR_SIMILAR:
		u.left, u.right, u.prefix = e.Lexpr, e.Rexpr, e.Lexpr == nil
	case pg.A_Expr_Kind_AEXPR_OP_ANY, pg.A_Expr_Kind_AEXPR_OP_ALL:
		u.left, u.right, u.rightElem = e.Lexpr, e.Rexpr, true
	case pg.A_Expr_Kind_AEXPR_IN:
		// The list and the left operand are converted to a common type.
		u.left = e.Lexpr
		site := &unifySite{nodes: []*pg.Node{e.Lexpr}, level: lvl, vis: w.vis}
		if list := e.Rexpr.GetList(); list != nil {
			site.nodes = append(site.nodes, list.Items...)
		} else {
			site.nodes = append(site.nodes, e.Rexpr)
		}
		w.st.unifySites = append(w.st.unifySites, site)
	}
	w.st.ops = append(w.st.ops, u)
}

// timeWords are the date/time input words whose value depends on the current time.
var timeWords = []string{"now", "today", "tomorrow", "yesterday"}

func (w *walker) literal(c *pg.A_Const, bare bool) {
	sv, ok := c.Val.(*pg.A_Const_Sval)
	if !ok {
		return
	}
	s := sv.Sval.GetSval()
	if bare {
		w.st.bareStrings = true
	}
	if hasTimeWord(s) {
		w.st.refuse(ReasonTimeLiteral, fmt.Sprintf("%q", s))
	}
}

// hasTimeWord reports whether s holds one of timeWords as a word of ASCII letters,
// in any case, the way the date/time input parser splits its fields. Plan.Key runs
// it on every text argument, so it does not allocate and skips ahead with
// IndexByte: every time word has a w or a y.
func hasTimeWord(s string) bool {
	var next [4]int // next index of w, W, y, Y at or after i; -1: none left
	letters := [4]byte{'w', 'W', 'y', 'Y'}
	for k := range next {
		next[k] = -2 // not searched yet
	}
	for i := 0; i < len(s); {
		j := -1
		for k, c := range letters {
			if next[k] == -2 || (next[k] >= 0 && next[k] < i) {
				next[k] = strings.IndexByte(s[i:], c)
				if next[k] >= 0 {
					next[k] += i
				}
			}
			if next[k] >= 0 && (j < 0 || next[k] < j) {
				j = next[k]
			}
		}
		if j < 0 {
			return false
		}
		start, end := j, j+1
		for start > i && isASCIILetter(s[start-1]) {
			start--
		}
		for end < len(s) && isASCIILetter(s[end]) {
			end++
		}
		for _, tw := range timeWords {
			if equalFoldASCII(s[start:end], tw) {
				return true
			}
		}
		i = end
	}
	return false
}

func isASCIILetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

// equalFoldASCII compares ASCII letters w with the lower-case word tw.
func equalFoldASCII(w, tw string) bool {
	if len(w) != len(tw) {
		return false
	}
	for i := 0; i < len(w); i++ {
		if w[i]|0x20 != tw[i] {
			return false
		}
	}
	return true
}

// funcQName returns a name written as one or two String nodes (name, or
// schema.name): of a function, or of a type.
func funcQName(name []*pg.Node) (qname, bool) {
	var parts []string
	for _, n := range name {
		s := n.GetString_()
		if s == nil {
			return qname{}, false
		}
		parts = append(parts, s.Sval)
	}
	switch len(parts) {
	case 1:
		return qname{name: parts[0]}, true
	case 2:
		return qname{schema: parts[0], name: parts[1]}, true
	}
	return qname{}, false
}

func (st *stmt) addFunc(q qname) {
	for _, f := range st.funcs {
		if f == q {
			return
		}
	}
	st.funcs = append(st.funcs, q)
}

func sqlValueFunctionName(op pg.SQLValueFunctionOp) string {
	name := strings.TrimPrefix(op.String(), "SVFOP_")
	return strings.ReplaceAll(name, "_", " ")
}
