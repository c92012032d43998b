package querycache

// MayWrite reports, from the text alone, whether a statement may change data, so
// the driver knows which statements its read-your-writes fence must wait for. Only
// a statement PostgreSQL rejects, an empty one, or a query (SELECT, VALUES, TABLE)
// that calls no function by name is known not to write: a function may write
// whatever its volatility says. Operators and casts are taken to be the built-in
// kind, which do not write.
func (a *Analyzer) MayWrite(sql string) bool {
	mayWrite, _ := a.Effects(sql)
	return mayWrite
}

// SetsOnly reports a SET, RESET or SHOW statement: it may change the session's
// settings (search_path, role, ...), but writes no data.
func (a *Analyzer) SetsOnly(sql string) bool { return a.statement(sql).st.setsOnly }

// Effects is MayWrite, and whether the statement creates a temporary object (whose
// name may shadow a relation others read: see Session.TempObjects).
func (a *Analyzer) Effects(sql string) (mayWrite, createsTemp bool) {
	st := a.statement(sql).st
	switch st.reason {
	case ReasonParseError, ReasonEmpty:
		return false, false
	case ReasonNone:
		return len(st.funcs) > 0, st.createsTemp
	}
	return true, st.createsTemp
}
