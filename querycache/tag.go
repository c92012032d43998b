package querycache

// LSN is a PostgreSQL write-ahead log position. Invalidations carry the commit LSN of
// the transaction that caused them, and the watermark is the highest commit LSN whose
// invalidations are fully applied. It is pglogrepl.LSN's representation, without the
// dependency.
type LSN uint64

// Tag names a set of rows of one relation that cached results depend on. A cached
// entry lists the tags it depends on; a committed change invalidates tags; an entry
// is valid only while none of its tags was invalidated after the entry's stamp.
//
// Tags are opaque to the stores: only their equality matters. The analyzer builds
// them from a query's predicates and arguments, package invalidate from the old and
// new values of changed rows, with the same constructors so both sides agree.
type Tag string
