// Package cdc streams the committed row changes of a PostgreSQL database through
// logical replication (pgoutput protocol 2 over jackc/pglogrepl): publication and
// slot management, the receive loop, decoding into committed transactions in
// commit order, acknowledgement only after the consumer has handled a commit,
// reconnection with backoff, and health and lag reporting.
//
// It knows nothing about caches: its output is transactions of row changes, and
// what they mean for cached results is package invalidate's business.
//
// # Guarantees
//
// A [Listener] calls its [Consumer]'s Apply once per committed transaction of
// the published tables, in commit order, and acknowledges the transaction's
// end LSN to PostgreSQL only after Apply returned nil for it. Delivery is at
// least once: after a crash, a reconnection or an Apply error, transactions not
// yet acknowledged come again; none is skipped. Rolled-back transactions, and
// rolled-back subtransactions of streamed ones, are never delivered.
//
// When the listener cannot prove that nothing was missed (a slot was created,
// dropped, or lost its WAL), it calls Consumer.HistoryLost before delivering
// anything of the new history.
//
// [Health.AppliedLSN] is the watermark: every transaction that committed before
// it has been applied. Compared with [CurrentWALLSN] read after a commit, it
// tells when that commit's changes have been applied (read-your-writes).
//
// # Memory
//
// Transactions are buffered until their commit, including large ones that
// PostgreSQL streams while they are in progress. [Config.MaxTransactionBytes]
// bounds that buffer: past it, the largest open transaction keeps one
// [Overflow] event per relation ("any row may have changed") instead of its row
// changes.
//
// # Server requirements
//
// PostgreSQL 14 or later with wal_level = logical, a role with the REPLICATION
// attribute, and a publication (created by the listener when
// [Config.CreatePublication] is set; FOR ALL TABLES needs a superuser).
// Changes to partitioned tables are reported under the leaf partition unless
// the publication sets publish_via_partition_root.
package cdc
