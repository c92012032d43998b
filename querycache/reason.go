package querycache

// Reason tells why a statement is not cached. The set is closed: every refusal the
// analyzer makes is one of these, so callers can count them and pgcache explain can
// describe them. The zero value, ReasonNone, belongs to cacheable plans.
type Reason uint8

const (
	// ReasonNone: the plan is cacheable.
	ReasonNone Reason = iota
	// ReasonParseError: PostgreSQL's parser rejects the text. It is sent to the server
	// untouched so the application sees the server's own error.
	ReasonParseError
	// ReasonEmpty: the text holds no statement.
	ReasonEmpty
	// ReasonMultiStatement: several statements in one string.
	ReasonMultiStatement
	// ReasonNotSelect: anything but SELECT, VALUES or TABLE.
	ReasonNotSelect
	// ReasonLocking: FOR UPDATE / FOR SHARE and the like, at any level.
	ReasonLocking
	// ReasonSelectInto: SELECT ... INTO creates a table.
	ReasonSelectInto
	// ReasonWritableCTE: a WITH item that inserts, updates, deletes or merges.
	ReasonWritableCTE
	// ReasonDirectiveOff: the statement carries /* pgcache:off */.
	ReasonDirectiveOff
	// ReasonInTransaction: the session is inside an explicit transaction, whose
	// snapshot and own uncommitted writes the cache cannot see.
	ReasonInTransaction
	// ReasonTempObjects: the session created temporary objects, which may shadow
	// the names the statement uses.
	ReasonTempObjects
	// ReasonNoRelations: the statement reads no table, so no change can ever
	// invalidate it and there is nothing to save by caching it.
	ReasonNoRelations
	// ReasonVolatileFunction: a function the call may resolve to (several when
	// the argument types do not decide) that is not IMMUTABLE and not a built-in
	// depending only on what the key holds, or a construct such as CURRENT_DATE
	// that depends on the time, the transaction or the session.
	ReasonVolatileFunction
	// ReasonVolatileOperator: the same for an operator's function.
	ReasonVolatileOperator
	// ReasonTimeLiteral: a literal such as 'now' or 'today' whose value depends on
	// when the statement runs.
	ReasonTimeLiteral
	// ReasonVolatileCast: a conversion, explicit or implicit, whose result may
	// depend on the time, the catalog or settings outside the key (to a reg* type,
	// from text to a date/time type, time to timetz, to or from money, ...).
	ReasonVolatileCast
	// ReasonUnknownObject: a relation, function, operator or type the catalog does
	// not know (the server will most likely report the error itself).
	ReasonUnknownObject
	// ReasonSystemCatalog: a relation in pg_catalog, information_schema or
	// pg_toast, which logical replication does not publish.
	ReasonSystemCatalog
	// ReasonTemporaryTable: a temporary relation, private to one session.
	ReasonTemporaryTable
	// ReasonUnloggedTable: an unlogged relation, absent from the WAL.
	ReasonUnloggedTable
	// ReasonForeignTable: a foreign table, whose rows live elsewhere.
	ReasonForeignTable
	// ReasonSequence: a sequence, which changes without replicated row changes.
	ReasonSequence
	// ReasonMaterializedView: a materialized view; REFRESH is not replicated.
	ReasonMaterializedView
	// ReasonView: a view that could not be resolved to its base relations (too
	// deep, or its definition could not be analyzed).
	ReasonView
	// ReasonRowSecurity: a relation with row-level security enabled.
	ReasonRowSecurity
	// ReasonNotPublished: a relation outside the publication, so its changes
	// never reach the invalidator.
	ReasonNotPublished
	// ReasonUnsupported: a construct the analyzer does not analyze (TABLESAMPLE,
	// XMLTABLE, JSON_TABLE, too deep nesting, too many relations).
	ReasonUnsupported
	// ReasonNotChecked: catalog-free analysis only (no session to ask): relation
	// kinds, function volatility and column types were not checked.
	ReasonNotChecked

	numReasons // keep last
)

var reasonNames = [numReasons]string{
	ReasonNone:             "cacheable",
	ReasonParseError:       "parse-error",
	ReasonEmpty:            "empty",
	ReasonMultiStatement:   "multi-statement",
	ReasonNotSelect:        "not-select",
	ReasonLocking:          "locking-clause",
	ReasonSelectInto:       "select-into",
	ReasonWritableCTE:      "writable-cte",
	ReasonDirectiveOff:     "directive-off",
	ReasonInTransaction:    "in-transaction",
	ReasonTempObjects:      "session-temp-objects",
	ReasonNoRelations:      "no-relations",
	ReasonVolatileFunction: "volatile-function",
	ReasonVolatileOperator: "volatile-operator",
	ReasonTimeLiteral:      "time-literal",
	ReasonVolatileCast:     "volatile-cast",
	ReasonUnknownObject:    "unknown-object",
	ReasonSystemCatalog:    "system-catalog",
	ReasonTemporaryTable:   "temporary-table",
	ReasonUnloggedTable:    "unlogged-table",
	ReasonForeignTable:     "foreign-table",
	ReasonSequence:         "sequence",
	ReasonMaterializedView: "materialized-view",
	ReasonView:             "view",
	ReasonRowSecurity:      "row-security",
	ReasonNotPublished:     "not-published",
	ReasonUnsupported:      "unsupported",
	ReasonNotChecked:       "not-checked",
}

var reasonDescriptions = [numReasons]string{
	ReasonNone:             "cacheable",
	ReasonParseError:       "PostgreSQL's parser rejects it; it goes to the server untouched",
	ReasonEmpty:            "no statement",
	ReasonMultiStatement:   "several statements in one string",
	ReasonNotSelect:        "not a SELECT, VALUES or TABLE statement",
	ReasonLocking:          "locking clause (FOR UPDATE/SHARE)",
	ReasonSelectInto:       "SELECT INTO creates a table",
	ReasonWritableCTE:      "WITH clause that writes",
	ReasonDirectiveOff:     "turned off by /* pgcache:off */",
	ReasonInTransaction:    "inside an explicit transaction",
	ReasonTempObjects:      "the session has temporary objects that may shadow names",
	ReasonNoRelations:      "reads no table",
	ReasonVolatileFunction: "calls a function that is not IMMUTABLE and may depend on more than the key",
	ReasonVolatileOperator: "uses an operator that is not IMMUTABLE and may depend on more than the key",
	ReasonTimeLiteral:      "a literal whose value depends on the current time",
	ReasonVolatileCast:     "a conversion whose result may depend on the time, the catalog or settings outside the key",
	ReasonUnknownObject:    "names an object the catalog does not know",
	ReasonSystemCatalog:    "reads a system catalog",
	ReasonTemporaryTable:   "reads a temporary table",
	ReasonUnloggedTable:    "reads an unlogged table",
	ReasonForeignTable:     "reads a foreign table",
	ReasonSequence:         "reads a sequence",
	ReasonMaterializedView: "reads a materialized view (REFRESH is not replicated)",
	ReasonView:             "reads a view that could not be resolved to base tables",
	ReasonRowSecurity:      "reads a table with row-level security",
	ReasonNotPublished:     "reads a table outside the publication",
	ReasonUnsupported:      "uses a construct the analyzer does not analyze",
	ReasonNotChecked:       "not checked against a catalog",
}

// String returns the reason's short code, e.g. "volatile-function".
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown-reason"
}

// Description returns the reason in words, for pgcache explain.
func (r Reason) Description() string {
	if r < numReasons {
		return reasonDescriptions[r]
	}
	return "unknown reason"
}
