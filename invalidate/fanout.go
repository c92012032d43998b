package invalidate

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/querycache"
)

// Batch is one message of the fan-out: the invalidations of one committed
// transaction (or a flush), or a heartbeat that only carries the leader's watermark.
type Batch struct {
	// Epoch identifies the stream's history: a new one starts when a leader finds
	// the stream empty (first start, or Redis lost it). Followers treat a change of
	// epoch as lost history.
	Epoch uint64
	// Seq numbers the batches of an epoch 1, 2, 3...: a follower that sees a gap
	// has missed invalidations.
	Seq uint64
	// LSN is the commit LSN of the transaction, or the leader's watermark for a
	// heartbeat: once a follower has applied this batch, every commit up to LSN is
	// applied.
	LSN querycache.LSN
	// Tags are the tags to invalidate at LSN.
	Tags []querycache.Tag
	// Flush invalidates everything (history lost upstream).
	Flush bool
	// Healthy is the leader's verdict on its own change stream when it sent the
	// batch: false when it is reconnecting or further behind than allowed.
	Healthy bool
	// Pending: the Tags are a commit's at LSN, but the watermark does not pass it
	// yet; a later batch advances it once the commit is visible to new snapshots
	// (see Visibility).
	Pending bool
	// Sent is the leader's clock when it sent the batch.
	Sent time.Time
}

const batchVersion = 2 // 2: the pending flag

// Batch wire format (little endian): version u8, flags u8 (1 flush, 2 healthy, 4 pending),
// epoch u64, seq u64, lsn u64, sent unix-nanos i64, tag count uvarint, then per tag
// a uvarint length and the bytes.
func (b *Batch) marshal() []byte {
	size := 2 + 8*4 + binary.MaxVarintLen64
	for _, t := range b.Tags {
		size += binary.MaxVarintLen64 + len(t)
	}
	buf := make([]byte, 0, size)
	var flags byte
	if b.Flush {
		flags |= 1
	}
	if b.Healthy {
		flags |= 2
	}
	if b.Pending {
		flags |= 4
	}
	buf = append(buf, batchVersion, flags)
	buf = binary.LittleEndian.AppendUint64(buf, b.Epoch)
	buf = binary.LittleEndian.AppendUint64(buf, b.Seq)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(b.LSN))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(b.Sent.UnixNano()))
	buf = binary.AppendUvarint(buf, uint64(len(b.Tags)))
	for _, t := range b.Tags {
		buf = binary.AppendUvarint(buf, uint64(len(t)))
		buf = append(buf, t...)
	}
	return buf
}

var errBadBatch = errors.New("invalidate: malformed fan-out batch")

func unmarshalBatch(p []byte) (Batch, error) {
	var b Batch
	if len(p) < 34 || p[0] != batchVersion {
		return b, errBadBatch
	}
	b.Flush, b.Healthy, b.Pending = p[1]&1 != 0, p[1]&2 != 0, p[1]&4 != 0
	b.Epoch = binary.LittleEndian.Uint64(p[2:])
	b.Seq = binary.LittleEndian.Uint64(p[10:])
	b.LSN = querycache.LSN(binary.LittleEndian.Uint64(p[18:]))
	b.Sent = time.Unix(0, int64(binary.LittleEndian.Uint64(p[26:])))
	p = p[34:]
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)) {
		return b, errBadBatch
	}
	p = p[k:]
	b.Tags = make([]querycache.Tag, 0, n)
	for range n {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return b, errBadBatch
		}
		b.Tags = append(b.Tags, querycache.Tag(p[k:k+int(l)]))
		p = p[k+int(l):]
	}
	if len(p) != 0 {
		return b, errBadBatch
	}
	return b, nil
}

// FanoutConfig configures the Redis stream that carries batches from the leader to
// every instance.
type FanoutConfig struct {
	// Client is the Redis holding the stream. Required.
	Client redis.UniversalClient
	// Stream is the stream's key. Instances sharing a cache must use the same one.
	// default: "pgcache:{invalidations}"
	Stream string
	// MaxLen bounds the stream (approximately: XADD MAXLEN ~). A follower that falls
	// further behind than this loses history and flushes. default: 100000
	MaxLen int64
	// Block is how long one read waits for new batches. default: 1s
	Block time.Duration
}

func (c *FanoutConfig) fill() error {
	if c.Client == nil {
		return errors.New("invalidate: FanoutConfig.Client is required")
	}
	if c.Stream == "" {
		c.Stream = "pgcache:{invalidations}"
	}
	if c.MaxLen < 0 || c.Block < 0 {
		return errors.New("invalidate: FanoutConfig.MaxLen and Block must not be negative")
	}
	if c.MaxLen == 0 {
		c.MaxLen = 100000
	}
	if c.Block == 0 {
		c.Block = time.Second
	}
	return nil
}

// Publisher appends batches to the stream. Only the leader publishes; a new leader
// continues the epoch and numbering it finds in the stream.
// It is safe for concurrent use: the consumer and the heartbeat share it.
type Publisher struct {
	cfg   FanoutConfig
	epoch uint64

	mu  sync.Mutex
	seq uint64
}

// NewPublisher reads the stream's last batch so numbering continues after it, or
// starts a new epoch when the stream is empty.
func NewPublisher(ctx context.Context, cfg FanoutConfig) (*Publisher, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg}
	last, _, err := lastBatch(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if last == nil {
		p.epoch = newEpoch()
	} else {
		p.epoch, p.seq = last.Epoch, last.Seq
	}
	return p, nil
}

func newEpoch() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1 // never 0: 0 means "none yet"
}

// lastBatch returns the stream's last batch and its id, or nil when it is empty.
func lastBatch(ctx context.Context, cfg FanoutConfig) (*Batch, string, error) {
	msgs, err := cfg.Client.XRevRangeN(ctx, cfg.Stream, "+", "-", 1).Result()
	if err != nil {
		return nil, "", fmt.Errorf("invalidate: read the fan-out stream: %w", err)
	}
	if len(msgs) == 0 {
		return nil, "", nil
	}
	b, err := batchOf(msgs[0])
	if err != nil {
		return nil, "", err
	}
	return &b, msgs[0].ID, nil
}

func batchOf(m redis.XMessage) (Batch, error) {
	v, ok := m.Values["b"].(string)
	if !ok {
		return Batch{}, errBadBatch
	}
	return unmarshalBatch([]byte(v))
}

// Publish appends b with the next sequence number. On error the batch may or may
// not have been appended; publishing it again is harmless (invalidation is
// idempotent) and only costs followers a flush if it left a gap.
func (p *Publisher) Publish(ctx context.Context, b Batch) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b.Epoch, b.Seq = p.epoch, p.seq+1
	if b.Sent.IsZero() {
		b.Sent = time.Now()
	}
	err := p.cfg.Client.XAdd(ctx, &redis.XAddArgs{
		Stream: p.cfg.Stream,
		MaxLen: p.cfg.MaxLen,
		Approx: true,
		Values: []any{"b", b.marshal()},
	}).Err()
	if err != nil {
		return fmt.Errorf("invalidate: publish: %w", err)
	}
	p.seq++
	return nil
}

// FollowHandler receives what a Follower reads, from one goroutine, in order.
type FollowHandler interface {
	// Apply applies one batch. An error stops Follow.
	Apply(ctx context.Context, b Batch) error
	// Lost reports that batches may have been missed (a sequence gap, a new epoch,
	// the stream trimmed or gone, or Redis unreachable): everything applied from the
	// stream so far must be dropped. Batches after it continue from a new position.
	Lost(ctx context.Context, reason string) error
}

// Follow reads the stream from its current end and hands every batch to h, in
// order, until ctx is done. Redis errors are reported to h.Lost once per outage
// (and each to h.Failed, when h has that method) and retried with backoff; Follow
// returns ctx's error, or h's.
func Follow(ctx context.Context, cfg FanoutConfig, h FollowHandler) error {
	if err := cfg.fill(); err != nil {
		return err
	}
	var (
		pos     string // id of the last entry read; "" until positioned
		last    Batch  // last batch applied
		backoff = 50 * time.Millisecond
		down    bool // an outage was already reported
	)
	counter, _ := h.(interface{ Failed(reason string) })
	fail := func(reason string) error {
		if counter != nil {
			counter.Failed(reason)
		}
		if !down {
			down = true
			if err := h.Lost(ctx, reason); err != nil {
				return err
			}
		}
		pos = ""
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
		return nil
	}
	for ctx.Err() == nil {
		if pos == "" {
			b, id, err := lastBatch(ctx, cfg)
			if err != nil {
				if err := fail(err.Error()); err != nil {
					return err
				}
				continue
			}
			if id == "" {
				id = "0-0"
				last = Batch{}
			} else {
				last = *b
				// The last batch itself is applied: it carries the watermark a
				// follower starts from.
				if err := h.Apply(ctx, *b); err != nil {
					return err
				}
			}
			pos, down, backoff = id, false, 50*time.Millisecond
		}
		streams, err := cfg.Client.XRead(ctx, &redis.XReadArgs{
			Streams: []string{cfg.Stream, pos}, Count: 1000, Block: cfg.Block,
		}).Result()
		if errors.Is(err, redis.Nil) {
			// Nothing new within Block. The stream may have been recreated
			// (Redis restarted empty, a failover) with entries whose ids are below
			// pos, which XREAD would skip forever: look at its last entry.
			// (An id equal to pos may be a new entry too, made in the same
			// millisecond: then it holds another batch.)
			lb, id, err := lastBatch(ctx, cfg)
			switch {
			case ctx.Err() != nil:
			case err != nil:
				if err := fail(err.Error()); err != nil {
					return err
				}
			case pos != "0-0" && (id == "" || compareStreamIDs(id, pos) < 0 ||
				id == pos && (lb.Epoch != last.Epoch || lb.Seq != last.Seq)):
				if err := h.Lost(ctx, "the fan-out stream was recreated"); err != nil {
					return err
				}
				pos = ""
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if err := fail("fan-out stream unreachable: " + err.Error()); err != nil {
				return err
			}
			continue
		}
		for _, s := range streams {
			for _, m := range s.Messages {
				b, err := batchOf(m)
				if err != nil {
					return fmt.Errorf("%w (entry %s)", err, m.ID)
				}
				if reason := gap(last, b); reason != "" {
					if err := h.Lost(ctx, reason); err != nil {
						return err
					}
				}
				if err := h.Apply(ctx, b); err != nil {
					return err
				}
				last, pos = b, m.ID
			}
		}
	}
	return ctx.Err()
}

// gap says why b cannot directly follow last, or "" when it can.
func gap(last, b Batch) string {
	switch {
	case last.Epoch == 0:
		if b.Seq != 1 {
			return "fan-out stream began after batches this instance never saw"
		}
		return ""
	case b.Epoch != last.Epoch:
		return "fan-out stream started a new history (epoch " + strconv.FormatUint(b.Epoch, 16) + ")"
	case b.Seq != last.Seq+1:
		return fmt.Sprintf("fan-out gap: batch %d after %d", b.Seq, last.Seq)
	}
	return ""
}

// compareStreamIDs orders two Redis stream entry ids ("ms-seq"); a malformed one
// sorts first.
func compareStreamIDs(a, b string) int {
	parse := func(id string) (uint64, uint64) {
		ms, seq, _ := strings.Cut(id, "-")
		m, err1 := strconv.ParseUint(ms, 10, 64)
		q, err2 := strconv.ParseUint(seq, 10, 64)
		if err1 != nil || err2 != nil {
			return 0, 0
		}
		return m, q
	}
	am, aq := parse(a)
	bm, bq := parse(b)
	if c := cmp.Compare(am, bm); c != 0 {
		return c
	}
	return cmp.Compare(aq, bq)
}
