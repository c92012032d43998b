package invalidate

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pgcache/pgcache/pgcachetest"
	"github.com/pgcache/pgcache/querycache"
)

func TestBatchWireFormat(t *testing.T) {
	in := Batch{Epoch: 7, Seq: 42, LSN: 0x16B3748, Flush: true, Healthy: true, Pending: true,
		Tags: []querycache.Tag{"a", "", "public.users\x00id\x00\x01\x02"}, Sent: time.Unix(1700000000, 123)}
	out, err := unmarshalBatch(in.marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !out.Sent.Equal(in.Sent) {
		t.Errorf("Sent = %v", out.Sent)
	}
	out.Sent = in.Sent
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip: %+v != %+v", out, in)
	}
	good := in.marshal()
	for i := range good {
		if _, err := unmarshalBatch(good[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	if _, err := unmarshalBatch(append(good, 0)); err == nil {
		t.Error("trailing byte: no error")
	}
}

func FuzzUnmarshalBatch(f *testing.F) {
	f.Add((&Batch{Epoch: 1, Seq: 1, Tags: []querycache.Tag{"x"}}).marshal())
	f.Fuzz(func(t *testing.T, p []byte) {
		b, err := unmarshalBatch(p)
		if err != nil {
			return
		}
		again, err := unmarshalBatch(b.marshal())
		if err != nil || !reflect.DeepEqual(again.Tags, b.Tags) && len(b.Tags) > 0 {
			t.Fatalf("re-encoding a decoded batch: %v", err)
		}
	})
}

func TestGap(t *testing.T) {
	tests := []struct {
		last, b Batch
		gap     bool
	}{
		{Batch{}, Batch{Epoch: 5, Seq: 1}, false},
		{Batch{}, Batch{Epoch: 5, Seq: 3}, true},
		{Batch{Epoch: 5, Seq: 3}, Batch{Epoch: 5, Seq: 4}, false},
		{Batch{Epoch: 5, Seq: 3}, Batch{Epoch: 5, Seq: 5}, true},
		{Batch{Epoch: 5, Seq: 3}, Batch{Epoch: 6, Seq: 4}, true},
	}
	for _, tt := range tests {
		if got := gap(tt.last, tt.b) != ""; got != tt.gap {
			t.Errorf("gap(%+v, %+v) = %v", tt.last, tt.b, got)
		}
	}
}

// recorder is a FollowHandler that records what it is given.
type recorder struct {
	mu      sync.Mutex
	batches []Batch
	lost    []string
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1000)} }

func (r *recorder) Apply(_ context.Context, b Batch) error {
	r.mu.Lock()
	r.batches = append(r.batches, b)
	r.mu.Unlock()
	r.changed <- struct{}{}
	return nil
}

func (r *recorder) Lost(_ context.Context, reason string) error {
	r.mu.Lock()
	r.lost = append(r.lost, reason)
	r.mu.Unlock()
	r.changed <- struct{}{}
	return nil
}

// waitFor waits until cond holds for the recorder's state.
func (r *recorder) waitFor(t *testing.T, what string, cond func(batches []Batch, lost []string) bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r.batches, r.lost)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; batches %d, lost %q", what, len(r.batches), r.lost)
		}
	}
}

func TestFanout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := pgcachetest.SharedRedis(t).Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cfg := FanoutConfig{Client: client, Stream: fmt.Sprintf("test:{fanout-%d}", time.Now().UnixNano()), Block: 100 * time.Millisecond}

	pub, err := NewPublisher(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, Batch{LSN: 10, Tags: []querycache.Tag{"t1"}}); err != nil {
		t.Fatal(err)
	}

	// A follower starts from the last batch: it learns the watermark (10) from it.
	rec := newRecorder()
	followCtx, stopFollow := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Follow(followCtx, cfg, rec) }()
	rec.waitFor(t, "the last batch", func(b []Batch, _ []string) bool { return len(b) == 1 })

	for i := range 5 {
		if err := pub.Publish(ctx, Batch{LSN: querycache.LSN(20 + i), Tags: []querycache.Tag{querycache.Tag(fmt.Sprint("t", i))}}); err != nil {
			t.Fatal(err)
		}
	}
	rec.waitFor(t, "five more batches", func(b []Batch, _ []string) bool { return len(b) == 6 })

	// A new leader continues the numbering: no gap.
	pub2, err := NewPublisher(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub2.Publish(ctx, Batch{LSN: 30}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the new leader's batch", func(b []Batch, _ []string) bool { return len(b) == 7 })

	// The stream disappears (Redis restarted without persistence): the next leader
	// starts a new epoch and the follower reports lost history.
	if err := client.Del(ctx, cfg.Stream).Err(); err != nil {
		t.Fatal(err)
	}
	pub3, err := NewPublisher(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub3.Publish(ctx, Batch{LSN: 31}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "lost history", func(b []Batch, lost []string) bool { return len(b) == 8 && len(lost) == 1 })

	stopFollow()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Follow returned %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var lsns []querycache.LSN
	for _, b := range rec.batches {
		lsns = append(lsns, b.LSN)
	}
	want := []querycache.LSN{10, 20, 21, 22, 23, 24, 30, 31}
	if !reflect.DeepEqual(lsns, want) {
		t.Errorf("LSNs applied %v, want %v", lsns, want)
	}
}

// publishAndFollow publishes one batch to cfg's stream and starts a follower,
// stopped when the test ends, that has applied it.
func publishAndFollow(ctx context.Context, t *testing.T, cfg FanoutConfig) *recorder {
	t.Helper()
	pub, err := NewPublisher(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, Batch{LSN: 10}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	followCtx, stopFollow := context.WithCancel(ctx)
	t.Cleanup(stopFollow)
	go func() { _ = Follow(followCtx, cfg, rec) }()
	rec.waitFor(t, "the first batch", func(b []Batch, _ []string) bool { return len(b) == 1 })
	return rec
}

// TestFanoutRecreatedBelow: the stream is recreated with entry ids below the
// follower's position (Redis restarted empty on a clock behind the old one, say),
// which XREAD would skip forever: the follower reports the loss and follows the
// new stream.
func TestFanoutRecreatedBelow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := pgcachetest.SharedRedis(t).Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cfg := FanoutConfig{Client: client, Stream: fmt.Sprintf("test:{fanout-%d}", time.Now().UnixNano()), Block: 100 * time.Millisecond}
	rec := publishAndFollow(ctx, t, cfg)

	if err := client.Del(ctx, cfg.Stream).Err(); err != nil {
		t.Fatal(err)
	}
	b := Batch{Epoch: 99, Seq: 1, LSN: 5, Healthy: true}
	if err := client.XAdd(ctx, &redis.XAddArgs{Stream: cfg.Stream, ID: "1-1", Values: []any{"b", b.marshal()}}).Err(); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the loss and the new stream's batch", func(b []Batch, lost []string) bool {
		return len(lost) == 1 && len(b) == 2 && b[1].Epoch == 99
	})
}

// TestFanoutRedisOutage stops Redis under a follower: it reports the loss once and
// resumes when Redis is back.
func TestFanoutRedisOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rd, err := pgcachetest.StartRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rd.Terminate(context.Background()) })
	client, err := rd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cfg := FanoutConfig{Client: client, Block: 100 * time.Millisecond}
	rec := publishAndFollow(ctx, t, cfg)

	if err := rd.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the outage", func(_ []Batch, lost []string) bool { return len(lost) == 1 })
	if err := rd.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, Batch{LSN: 2}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "a batch after the outage", func(b []Batch, _ []string) bool { return len(b) >= 2 && b[len(b)-1].LSN == 2 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.lost) != 1 {
		t.Errorf("the outage was reported %d times: %q", len(rec.lost), rec.lost)
	}
}
