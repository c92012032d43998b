// Package invalidate turns committed row changes into cache invalidations: the tags a
// change could affect (relation-wide, and per predicate column set from the old and new
// row values), applied in commit order to the in-process and Redis stores, with the
// watermark that makes the stale-set race harmless: the highest commit LSN whose
// invalidations are applied and whose transaction new snapshots see (Visibility). It
// elects the one change-stream consumer among many application instances
// and fans its invalidations out to the others.
//
// It depends on package cdc for changes and package querycache for stores and tags; it
// knows nothing about database/sql.
package invalidate
