package cdc

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// LSN is a position in PostgreSQL's write-ahead log. It converts to
// querycache.LSN and pglogrepl.LSN as is.
type LSN uint64

// String formats the LSN as PostgreSQL does: two hexadecimal halves, "16/B374D848".
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// ParseLSN parses PostgreSQL's text form of an LSN.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if ok {
		h, err1 := strconv.ParseUint(hi, 16, 32)
		l, err2 := strconv.ParseUint(lo, 16, 32)
		if err1 == nil && err2 == nil {
			return LSN(h<<32 | l), nil
		}
	}
	return 0, fmt.Errorf("cdc: invalid LSN %q", s)
}

// currentWALLSNQuery reads the WAL insert position: it is past the end of
// every commit record already inserted, including asynchronous commits
// (synchronous_commit = off) that are not yet written, which the write position
// (pg_current_wal_lsn) may not have reached.
const currentWALLSNQuery = "SELECT pg_current_wal_insert_lsn()"

// CurrentWALLSN returns the server's current WAL insert position: a fence for
// read-your-writes. Read it on the connection that wrote, after the commit
// returned; once Listener.Health().AppliedLSN reaches it, the listener has
// applied every transaction that committed before it, that one included.
//
// Works on any connection, replication or not, but not on a standby. With a
// pgx.Conn, pass conn.PgConn(); with database/sql, get one through
// (*sql.Conn).Raw and pgx's stdlib.
//
// The applied position passes a fence without further commits only through the
// walsender's keepalives, which the listener acknowledges when it is idle; with
// synchronous_commit = off that waits for the WAL writer (wal_writer_delay,
// 200 ms by default).
func CurrentWALLSN(ctx context.Context, conn *pgconn.PgConn) (LSN, error) {
	res, err := conn.Exec(ctx, currentWALLSNQuery).ReadAll()
	if err != nil {
		return 0, fmt.Errorf("cdc: read WAL position: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 {
		return 0, fmt.Errorf("cdc: read WAL position: unexpected result")
	}
	return ParseLSN(string(res[0].Rows[0][0]))
}
