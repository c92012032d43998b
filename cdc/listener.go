package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sync/errgroup"
)

// State is the listener's state, as Health reports it.
type State int32

// States of a listener.
const (
	StateStarting     State = iota // first connection, before streaming
	StateStreaming                 // connected and receiving changes
	StateReconnecting              // after an error, waiting or connecting again
	StateFailed                    // stopped by a permanent error (Run returned it)
	StateStopped                   // Run's context ended
)

func (s State) String() string {
	switch s {
	case StateStarting:
		return "starting"
	case StateStreaming:
		return "streaming"
	case StateReconnecting:
		return "reconnecting"
	case StateFailed:
		return "failed"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Health is a snapshot of the listener's state and lag.
type Health struct {
	State State
	Since time.Time // when State was entered

	// AppliedLSN is the watermark: every transaction that committed before it
	// has been applied by the consumer (or, at the start of a new history, was
	// covered by HistoryLost). It is what the listener acknowledges to
	// PostgreSQL, and it never goes back.
	AppliedLSN LSN

	// LastCommitLSN and LastCommitTime are those of the last transaction Apply
	// returned nil for.
	LastCommitLSN  LSN
	LastCommitTime time.Time

	// ServerWALEnd is the WAL position in the server's latest message: for
	// logical replication, how far the server has decoded and sent.
	ServerWALEnd LSN
	// LagBytes is ServerWALEnd − AppliedLSN, 0 when caught up.
	LagBytes uint64
	// LagTime is how long the oldest transaction received and not yet applied
	// has been committed, 0 when there is none.
	LagTime time.Duration

	LastError     error // the error that ended the last connection, if any
	LastErrorTime time.Time

	// HistoryLost is true from the moment the listener knows history was lost
	// until the consumer's HistoryLost returned nil for it. HistoryLosses counts
	// the losses the consumer was told of.
	HistoryLost   bool
	HistoryLosses int
}

// Listener streams the committed transactions of a publication's tables to a
// Consumer, from a logical replication slot.
type Listener struct {
	cfg      Config
	pgcfg    *pgconn.Config
	consumer Consumer
	log      *slog.Logger
	running  atomic.Bool

	// Owned by the Run goroutine (one connection at a time).
	asm      *assembler
	database string // current_database() of the connection
	slotSeen bool   // the slot existed or was created during this Run

	applied        atomic.Uint64 // Health.AppliedLSN
	walEnd         atomic.Uint64
	lastCommitLSN  atomic.Uint64
	lastCommitTime atomic.Int64 // Unix nanoseconds

	mu            sync.Mutex
	state         State
	since         time.Time
	lastErr       error
	lastErrTime   time.Time
	historyLost   string // reason of a loss the consumer has not yet acknowledged
	historyLosses int
	unapplied     []time.Time // commit times of received, unapplied transactions, oldest first

	progress chan struct{} // RequestProgress was called
}

// NewListener validates cfg (filling its defaults) and returns a listener that
// delivers to c once Run is called.
func NewListener(cfg Config, c Consumer) (*Listener, error) {
	if c == nil {
		return nil, errors.New("cdc: NewListener: nil Consumer")
	}
	pgcfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	return &Listener{
		cfg:      cfg,
		pgcfg:    pgcfg,
		consumer: c,
		log:      cfg.Logger,
		asm:      newAssembler(cfg.MaxTransactionBytes),
		progress: make(chan struct{}, 1),
		state:    StateStarting,
		since:    time.Now(),
	}, nil
}

// Run connects, sets up the publication and the slot, and streams until ctx
// ends (it then returns ctx.Err()) or a permanent error, which it returns (see
// IsPermanent). Any other error (connection lost, server restarted, consumer
// failed) is reported in Health and followed by a reconnection, with capped
// exponential backoff, resuming after the last acknowledged transaction. Run
// may be called once.
func (l *Listener) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("cdc: Listener.Run called twice")
	}
	failures := 0
	for {
		progress, err := l.session(ctx)
		if ctx.Err() != nil {
			l.setState(StateStopped, nil)
			return ctx.Err()
		}
		if IsPermanent(err) {
			l.setState(StateFailed, err)
			l.log.Error("cdc: listener stopped", "error", err)
			return err
		}
		if progress {
			failures = 0
		}
		delay := l.cfg.Backoff.delay(failures, rand.Float64())
		failures++
		l.setState(StateReconnecting, err)
		l.log.Warn("cdc: replication connection ended; reconnecting", "error", err, "delay", delay)
		select {
		case <-ctx.Done():
			l.setState(StateStopped, nil)
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// session runs one replication connection, from connecting to its end, and
// reports whether the applied position advanced during it.
func (l *Listener) session(ctx context.Context) (progress bool, err error) {
	conn, err := l.connect(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if err := l.checkServer(ctx, conn); err != nil {
		return false, err
	}
	if err := l.ensurePublication(ctx, conn); err != nil {
		return false, err
	}
	start, err := l.ensureSlot(ctx, conn)
	if err != nil {
		return false, err
	}
	l.slotSeen = true
	if start.historyLost != "" {
		l.mu.Lock()
		l.historyLost = start.historyLost
		l.mu.Unlock()
	}
	if err := l.reportHistoryLost(ctx); err != nil {
		return false, err
	}
	// The slot's position is applied: by an earlier consumer, or (new history)
	// covered by HistoryLost. A consumer that follows progress learns it now,
	// before any transaction (nothing else calls it yet).
	l.advanceApplied(start.lsn)
	if p, ok := l.consumer.(ProgressConsumer); ok {
		if err := p.Progress(ctx, LSN(l.applied.Load())); err != nil {
			return false, fmt.Errorf("cdc: consumer Progress: %w", err)
		}
	}
	if err := l.startReplication(ctx, conn, start.lsn); err != nil {
		return false, err
	}
	l.setState(StateStreaming, nil)
	l.log.Info("cdc: streaming", "slot", l.cfg.Slot, "publication", l.cfg.Publication, "from", start.lsn)
	before := l.applied.Load()
	err = l.stream(ctx, conn)
	return l.applied.Load() > before, err
}

// reportHistoryLost tells the consumer of a pending loss of history.
func (l *Listener) reportHistoryLost(ctx context.Context) error {
	l.mu.Lock()
	reason := l.historyLost
	l.mu.Unlock()
	if reason == "" {
		return nil
	}
	l.log.Warn("cdc: history lost; the consumer must treat everything as changed", "reason", reason)
	if err := l.consumer.HistoryLost(ctx, reason); err != nil {
		return fmt.Errorf("cdc: consumer HistoryLost: %w", err)
	}
	l.mu.Lock()
	l.historyLost = ""
	l.historyLosses++
	l.mu.Unlock()
	return nil
}

// Timing of status updates.
const (
	// queueLength bounds the committed transactions waiting for the consumer
	// (their memory is bounded by Config.MaxTransactionBytes as well).
	queueLength = 256
	// ackThrottle is the shortest time between two status updates sent because
	// the consumer applied something: often enough for the slot to follow
	// closely, rarely enough to cost nothing at high commit rates.
	ackThrottle = 20 * time.Millisecond
	// finalStatusTimeout bounds the last status update sent when Run stops.
	finalStatusTimeout = time.Second
)

// session state shared by the goroutines of one connection.
type stream struct {
	conn     *pgconn.PgConn
	txs      chan *Transaction // committed, for the consumer
	held     atomic.Int64      // bytes of transactions in txs or in Apply
	enqueued uint64            // transactions sent to txs (receiver only)
	appliedN atomic.Uint64     // transactions applied
	drained  chan struct{}     // signalled when the consumer released memory
	advanced chan struct{}     // signalled when AppliedLSN advanced after Apply
	reply    chan struct{}     // signalled when a status update is due now
	idle     chan struct{}     // signalled when an idle acknowledgement advanced AppliedLSN
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// stream runs the three goroutines of a connection: the receiver (decoding and
// assembling transactions), the applier (calling the consumer, in order) and
// the status sender (acknowledgements and keepalive replies). The receiver is
// the only reader of conn and the status sender its only writer. The first
// error ends all three.
func (l *Listener) stream(ctx context.Context, conn *pgconn.PgConn) error {
	s := &stream{
		conn:     conn,
		txs:      make(chan *Transaction, queueLength),
		drained:  make(chan struct{}, 1),
		advanced: make(chan struct{}, 1),
		reply:    make(chan struct{}, 1),
		idle:     make(chan struct{}, 1),
	}
	g, gctx := errgroup.WithContext(ctx)
	l.asm.reset()
	l.asm.heldBytes = s.held.Load
	l.asm.waitHeld = func() error {
		select {
		case <-s.drained:
			return nil
		case <-gctx.Done():
			return gctx.Err()
		}
	}
	g.Go(func() error { return l.receive(gctx, s) })
	g.Go(func() error { return l.apply(gctx, s) })
	g.Go(func() error { return l.sendStatus(gctx, s) })
	err := g.Wait()

	l.mu.Lock()
	l.unapplied = l.unapplied[:0]
	l.mu.Unlock()
	if ctx.Err() != nil {
		// Stopping: acknowledge what was applied, so a restart resends less.
		// The context watcher has reset the connection's deadline; set one.
		_ = conn.Conn().SetDeadline(time.Now().Add(finalStatusTimeout))
		_ = pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pglogrepl.LSN(l.applied.Load())})
	}
	return err
}

// receive reads the replication stream.
func (l *Listener) receive(ctx context.Context, s *stream) error {
	// ReceiveMessage with a cancellable context watches it with a goroutine
	// hand-off per message; a read deadline set when ctx ends stops the read
	// just as well, for nothing per message.
	stop := context.AfterFunc(ctx, func() { _ = s.conn.Conn().SetReadDeadline(time.Now()) })
	defer stop()
	for {
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("cdc: receive: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("cdc: %w", err)
				}
				l.advanceWALEnd(LSN(ka.ServerWALEnd))
				// A logical walsender's keepalive carries the position up to
				// which it has decoded WAL and sent the output (sentPtr), and
				// it sends on one connection in order: every commit before
				// that position has already been received. When none is open
				// and all received ones are applied, everything before it is
				// applied, and acknowledging it lets an idle database (or one
				// whose writes are all outside the publication) release WAL.
				// Transactions still open commit after it and are sent whole
				// again after a reconnect, so they lose nothing either.
				idleAck := l.asm.idle() && s.enqueued == s.appliedN.Load() && l.advanceApplied(LSN(ka.ServerWALEnd))
				if idleAck || ka.ReplyRequested {
					signal(s.reply)
				}
				if idleAck {
					signal(s.idle)
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("cdc: %w", err)
				}
				l.advanceWALEnd(LSN(xld.ServerWALEnd))
				tx, err := l.asm.handle(xld.WALData)
				if err != nil {
					return err
				}
				if tx != nil {
					if err := l.enqueue(ctx, s, tx); err != nil {
						return err
					}
				}
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("cdc: replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("cdc: the server ended the replication stream")
		}
	}
}

// enqueue hands a committed transaction to the applier.
func (l *Listener) enqueue(ctx context.Context, s *stream, tx *Transaction) error {
	s.held.Add(tx.size)
	l.mu.Lock()
	l.unapplied = append(l.unapplied, tx.CommitTime)
	l.mu.Unlock()
	select {
	case s.txs <- tx:
		s.enqueued++
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// apply calls the consumer for each committed transaction, in order, and
// advances the applied position after each.
func (l *Listener) apply(ctx context.Context, s *stream) error {
	for {
		var tx *Transaction
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.idle:
			if p, ok := l.consumer.(ProgressConsumer); ok {
				if err := p.Progress(ctx, LSN(l.applied.Load())); err != nil {
					return fmt.Errorf("cdc: consumer Progress: %w", err)
				}
			}
			continue
		case tx = <-s.txs:
		}
		if err := l.consumer.Apply(ctx, tx); err != nil {
			return fmt.Errorf("cdc: consumer Apply of transaction %d (commit %s): %w", tx.Xid, tx.CommitLSN, err)
		}
		l.lastCommitLSN.Store(uint64(tx.CommitLSN))
		l.lastCommitTime.Store(tx.CommitTime.UnixNano())
		l.advanceApplied(tx.EndLSN)
		l.mu.Lock()
		if len(l.unapplied) > 0 {
			l.unapplied = l.unapplied[1:]
		}
		l.mu.Unlock()
		s.held.Add(-tx.size)
		s.appliedN.Add(1)
		signal(s.drained)
		signal(s.advanced)
	}
}

// sendStatus sends status updates: at once when the server asks or an idle
// acknowledgement advanced, soon after the consumer applied something, and at
// least every StatusInterval (which keeps the connection alive even while the
// receiver waits for the consumer).
func (l *Listener) sendStatus(ctx context.Context, s *stream) error {
	ticker := time.NewTicker(l.cfg.StatusInterval)
	defer ticker.Stop()
	var last time.Time
	var throttled <-chan time.Time
	replyRequested := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.advanced:
			if wait := ackThrottle - time.Since(last); wait > 0 {
				if throttled == nil {
					throttled = time.After(wait)
				}
				continue
			}
		case <-throttled:
		case <-s.reply:
		case <-ticker.C:
		case <-l.progress:
			replyRequested = true
		}
		throttled = nil
		last = time.Now()
		ack := pglogrepl.LSN(l.applied.Load())
		status := pglogrepl.StandbyStatusUpdate{WALWritePosition: ack, ReplyRequested: replyRequested}
		replyRequested = false
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, s.conn, status); err != nil {
			return fmt.Errorf("cdc: send status: %w", err)
		}
	}
}

// RequestProgress asks the server for a keepalive now. Its position lets an idle
// stream report progress (ProgressConsumer) at once, instead of at the server's
// next keepalive: for a reader waiting for the stream to pass a position it knows
// has been written (read-your-writes). It does not block.
func (l *Listener) RequestProgress() {
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

// advanceApplied raises the applied position to lsn and reports whether it rose.
func (l *Listener) advanceApplied(lsn LSN) bool {
	for {
		cur := l.applied.Load()
		if uint64(lsn) <= cur {
			return false
		}
		if l.applied.CompareAndSwap(cur, uint64(lsn)) {
			return true
		}
	}
}

func (l *Listener) advanceWALEnd(lsn LSN) {
	for {
		cur := l.walEnd.Load()
		if uint64(lsn) <= cur || l.walEnd.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

func (l *Listener) setState(st State, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st != l.state {
		l.state, l.since = st, time.Now()
	}
	if err != nil {
		l.lastErr, l.lastErrTime = err, time.Now()
	}
}

// Health returns a snapshot of the listener's state and lag. It is safe to
// call from any goroutine.
func (l *Listener) Health() Health {
	l.mu.Lock()
	h := Health{
		State:         l.state,
		Since:         l.since,
		LastError:     l.lastErr,
		LastErrorTime: l.lastErrTime,
		HistoryLost:   l.historyLost != "",
		HistoryLosses: l.historyLosses,
	}
	if len(l.unapplied) > 0 {
		h.LagTime = max(0, time.Since(l.unapplied[0]))
	}
	l.mu.Unlock()
	h.AppliedLSN = LSN(l.applied.Load())
	h.ServerWALEnd = LSN(l.walEnd.Load())
	if h.ServerWALEnd > h.AppliedLSN {
		h.LagBytes = uint64(h.ServerWALEnd - h.AppliedLSN)
	}
	h.LastCommitLSN = LSN(l.lastCommitLSN.Load())
	if ns := l.lastCommitTime.Load(); ns != 0 {
		h.LastCommitTime = time.Unix(0, ns)
	}
	return h
}
