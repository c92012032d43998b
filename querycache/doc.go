// Package querycache decides what may be cached and holds what is: SQL analysis with
// PostgreSQL's own parser (pg_query_go) into a Plan (cacheable or why not, the
// relations read and the predicate tags), cache keys, the result codec, and the stores
// (in process, Redis, and the two tiered).
//
// It knows nothing about database/sql or replication: the driver asks it what to do,
// package invalidate tells it what changed.
package querycache
