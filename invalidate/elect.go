package invalidate

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Elector elects the one instance, among all that share a replication slot, that
// consumes the change stream. The leader holds a PostgreSQL session-level advisory
// lock on a connection of its own; when that connection dies, PostgreSQL releases
// the lock and another instance takes over.
//
// The lock only keeps instances from fighting over the slot. Mutual exclusion of the
// stream itself comes from PostgreSQL: a slot streams to one connection at a time, so a
// deposed leader that has not yet noticed cannot consume alongside its successor.
type Elector struct {
	cfg    ElectorConfig
	leader atomic.Bool
}

// ElectorConfig configures an Elector.
type ElectorConfig struct {
	// ConnConfig reaches the database whose advisory lock is contended. Required.
	ConnConfig *pgx.ConnConfig
	// Name identifies what is led (the slot's name): instances with the same Name
	// contend for the same lock. Required.
	Name string
	// Interval is how often a follower tries to take the lock and a leader checks
	// that it still holds it. default: 1s
	Interval time.Duration
	// Logger receives elections and depositions. default: slog.Default()
	Logger *slog.Logger
}

// NewElector validates cfg and returns an Elector.
func NewElector(cfg ElectorConfig) (*Elector, error) {
	if cfg.ConnConfig == nil {
		return nil, errors.New("invalidate: ElectorConfig.ConnConfig is required")
	}
	if cfg.Name == "" {
		return nil, errors.New("invalidate: ElectorConfig.Name is required")
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("invalidate: ElectorConfig.Interval %v is negative", cfg.Interval)
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.ConnConfig = cfg.ConnConfig.Copy()
	return &Elector{cfg: cfg}, nil
}

// LockKey is the advisory lock key of a name: the same on every instance.
func LockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("pgcache leader:" + name))
	return int64(h.Sum64())
}

// IsLeader reports whether this instance leads now.
func (e *Elector) IsLeader() bool { return e.leader.Load() }

// Run campaigns until ctx is done. Each time this instance wins, it calls lead with
// a context that is cancelled when leadership is lost (the lock connection failed or
// the lock is no longer held) or ctx is done, and waits for lead to return before
// campaigning again. An error from lead gives leadership up for one Interval, so
// another instance may take over. Run returns ctx's error.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context) error) error {
	for {
		err := e.term(ctx, lead)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			e.cfg.Logger.Warn("pgcache: leader election", "name", e.cfg.Name, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(e.cfg.Interval):
		}
	}
}

// term connects, waits until it holds the lock, and leads until it loses it.
func (e *Elector) term(ctx context.Context, lead func(ctx context.Context) error) error {
	conn, err := pgx.ConnectConfig(ctx, e.cfg.ConnConfig)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		// Closing the session releases the lock if it is still held.
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	key := LockKey(e.cfg.Name)
	for {
		var won bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&won); err != nil {
			return fmt.Errorf("try lock: %w", err)
		}
		if won {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(e.cfg.Interval):
		}
	}

	// A deposed leader notices within one Interval plus one check (bounded by an
	// Interval): wait that long before leading, so terms do not overlap when only
	// the old leader's lock session died.
	grace := time.NewTimer(2 * e.cfg.Interval)
	select {
	case <-ctx.Done():
		grace.Stop()
		return ctx.Err()
	case <-grace.C:
	}
	if err := e.stillHeld(ctx, conn, key); err != nil {
		return fmt.Errorf("lost the lock before leading: %w", err)
	}

	e.cfg.Logger.Info("pgcache: elected leader", "name", e.cfg.Name)
	e.leader.Store(true)
	defer e.leader.Store(false)

	leadCtx, depose := context.WithCancel(ctx)
	defer depose()
	done := make(chan error, 1)
	go func() { done <- lead(leadCtx) }()

	ticker := time.NewTicker(e.cfg.Interval)
	defer ticker.Stop()
	for {
		select {
		case err := <-done:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("leader stopped: %w", err)
			}
			return nil
		case <-ticker.C:
			if err := e.stillHeld(ctx, conn, key); err != nil {
				e.cfg.Logger.Warn("pgcache: leadership lost", "name", e.cfg.Name, "err", err)
				depose()
				<-done
				return nil
			}
		}
	}
}

// stillHeld checks that this session still holds the lock: the connection works
// and pg_locks lists the lock for this backend.
func (e *Elector) stillHeld(ctx context.Context, conn *pgx.Conn, key int64) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Interval)
	defer cancel()
	var held bool
	// An advisory lock on a bigint key is stored as classid (high 32 bits) and
	// objid (low 32 bits) with objsubid 1.
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
		  AND classid = (($1::bigint >> 32) & 4294967295)::oid AND objid = ($1::bigint & 4294967295)::oid)`,
		key).Scan(&held)
	if err != nil {
		return err
	}
	if !held {
		return errors.New("advisory lock no longer held")
	}
	return nil
}
