package invalidate

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Visibility tells whether committed transactions are visible to new snapshots.
//
// Why it is needed: PostgreSQL writes a transaction's commit record to the WAL,
// where logical decoding may see it, a moment before the transaction leaves the
// list of running transactions that snapshots consult. A reader whose snapshot is
// taken in that moment reads the rows as they were before the commit. If the
// watermark already covered the commit when the reader took its stamp, its fill
// would be cached as current and stay stale. So the Consumer applies a
// transaction's tags at once but advances the watermark over it only once
// Visibility says new snapshots see it.
type Visibility interface {
	// Visible reports, for each top-level transaction id, whether a snapshot
	// taken now sees it. The transactions have committed.
	Visible(ctx context.Context, xids []uint32) ([]bool, error)
}

// PgVisibility is Visibility from the server's current snapshot
// (pg_current_snapshot(), PostgreSQL 13 and later), read over a connection of its
// own that it opens on first use and again after an error.
type PgVisibility struct {
	config *pgx.ConnConfig

	mu   sync.Mutex
	conn *pgx.Conn
}

// NewPgVisibility returns a PgVisibility connecting with config (a normal
// connection: replication parameters are removed).
func NewPgVisibility(config *pgx.ConnConfig) *PgVisibility {
	cfg := config.Copy()
	delete(cfg.RuntimeParams, "replication")
	return &PgVisibility{config: cfg}
}

// Visible implements Visibility.
func (v *PgVisibility) Visible(ctx context.Context, xids []uint32) ([]bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.conn == nil || v.conn.IsClosed() {
		conn, err := pgx.ConnectConfig(ctx, v.config)
		if err != nil {
			return nil, fmt.Errorf("invalidate: visibility check: %w", err)
		}
		v.conn = conn
	}
	var text string
	if err := v.conn.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&text); err != nil {
		_ = v.conn.Close(context.Background())
		v.conn = nil
		return nil, fmt.Errorf("invalidate: visibility check: %w", err)
	}
	snap, err := parseSnapshot(text)
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(xids))
	for i, x := range xids {
		out[i] = snap.visible(x)
	}
	return out, nil
}

// Close closes the connection.
func (v *PgVisibility) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.conn == nil {
		return nil
	}
	err := v.conn.Close(context.Background())
	v.conn = nil
	return err
}

// snapshot is a pg_snapshot: transactions below xmin are finished, those at or
// above xmax had not finished, and xip lists those in between still running.
type snapshot struct {
	xmin, xmax uint64 // 64-bit (epoch and xid) ids
	xip        map[uint64]bool
}

// parseSnapshot parses pg_snapshot's text form, "xmin:xmax:xip,xip,...".
func parseSnapshot(s string) (snapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return snapshot{}, fmt.Errorf("invalidate: malformed snapshot %q", s)
	}
	var snap snapshot
	var err error
	if snap.xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return snapshot{}, fmt.Errorf("invalidate: malformed snapshot %q", s)
	}
	if snap.xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil || snap.xmax < snap.xmin {
		return snapshot{}, fmt.Errorf("invalidate: malformed snapshot %q", s)
	}
	if parts[2] != "" {
		snap.xip = make(map[uint64]bool)
		for _, x := range strings.Split(parts[2], ",") {
			id, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return snapshot{}, fmt.Errorf("invalidate: malformed snapshot %q", s)
			}
			snap.xip[id] = true
		}
	}
	return snap, nil
}

// visible reports whether the snapshot sees a committed transaction, known by its
// 32-bit id (as logical decoding reports it). Transaction ids in use are within
// 2^31 of each other (PostgreSQL's wraparound protection), so the 32-bit id is
// placed in the epoch that puts it nearest xmin: before xmin, it had finished;
// otherwise it is seen unless it is at or past xmax or still listed as running.
func (s snapshot) visible(xid uint32) bool {
	d := int32(xid - uint32(s.xmin))
	if d < 0 {
		return true
	}
	full := s.xmin + uint64(d)
	return full < s.xmax && !s.xip[full]
}
