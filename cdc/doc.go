// Package cdc streams the committed row changes of a PostgreSQL database through
// logical replication (pgoutput over jackc/pglogrepl): publication and slot management,
// the receive loop, decoding into committed transactions in commit order,
// acknowledgement only after the consumer has handled a commit, reconnection with
// backoff, and health and lag reporting.
//
// It knows nothing about caches: its output is transactions of row changes, and what
// they mean for cached results is package invalidate's business.
package cdc
