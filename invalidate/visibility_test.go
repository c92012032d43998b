package invalidate

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/querycache"
)

func TestSnapshotVisible(t *testing.T) {
	snap, err := parseSnapshot("1000:1010:1003,1007")
	if err != nil {
		t.Fatal(err)
	}
	for xid, want := range map[uint32]bool{
		999: true, 10: true, // finished before xmin
		1000: true, 1002: true, 1009: true, // between xmin and xmax, not running
		1003: false, 1007: false, // running
		1010: false, 1011: false, // at or past xmax: not finished when the snapshot was taken
	} {
		if got := snap.visible(xid); got != want {
			t.Errorf("xid %d: visible %v, want %v", xid, got, want)
		}
	}
	// Across an epoch: 32-bit ids wrap, 64-bit ones do not.
	const epoch = 1 << 32
	snap, err = parseSnapshot("4294967290:4294967300:4294967298")
	if err != nil {
		t.Fatal(err)
	}
	for xid, want := range map[uint32]bool{
		4294967289: true, 4294967295: true, 1: true, // 2^32+1
		2: false, // 2^32+2 is running
		4: false, // 2^32+4 is past xmax
	} {
		if got := snap.visible(xid); got != want {
			t.Errorf("xid %d near epoch %d: visible %v, want %v", xid, epoch, got, want)
		}
	}
	for _, bad := range []string{"", "1:2", "a:2:", "5:4:", "1:5:x"} {
		if _, err := parseSnapshot(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if snap, err := parseSnapshot("7:7:"); err != nil || !snap.visible(6) || snap.visible(7) {
		t.Errorf("empty xip: %+v %v", snap, err)
	}
}

// fakeVisibility makes transactions visible when the test says so.
type fakeVisibility struct {
	mu      sync.Mutex
	visible map[uint32]bool
	checks  int
}

func (f *fakeVisibility) Visible(_ context.Context, xids []uint32) ([]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks++
	out := make([]bool, len(xids))
	for i, x := range xids {
		out[i] = f.visible[x]
	}
	return out, nil
}

func (f *fakeVisibility) show(xid uint32) {
	f.mu.Lock()
	f.visible[xid] = true
	f.mu.Unlock()
}

// recordingTarget records what a Consumer applies.
type recordingTarget struct {
	mu   sync.Mutex
	invs []querycache.Invalidation
}

func (r *recordingTarget) Apply(_ context.Context, inv querycache.Invalidation) error {
	r.mu.Lock()
	r.invs = append(r.invs, inv)
	r.mu.Unlock()
	return nil
}

// TestConsumerWaitsForVisibility: tags are applied at once, the watermark passes a
// commit only when its transaction is visible, and in commit order.
func TestConsumerWaitsForVisibility(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	target := &recordingTarget{}
	vis := &fakeVisibility{visible: map[uint32]bool{}}
	schemes := NewSchemes(0, 0)
	c, err := NewConsumer(ConsumerConfig{Target: target, Schemes: schemes, Visibility: vis})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	change := func(xid uint32, commit, end cdc.LSN) *cdc.Transaction {
		return &cdc.Transaction{Xid: xid, CommitLSN: commit, EndLSN: end, Events: []cdc.Event{
			&cdc.RowChange{Relation: usersRel, Op: cdc.OpInsert, New: []cdc.Value{text("1"), text("7"), text("a@x")}}}}
	}
	if err := c.Apply(ctx, change(501, 100, 110)); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, change(502, 200, 210)); err != nil {
		t.Fatal(err)
	}
	target.mu.Lock()
	if len(target.invs) != 2 || target.invs[0].Commit != 100 || target.invs[0].Watermark != 0 || len(target.invs[0].Tags) == 0 {
		t.Fatalf("tags not applied at once, or with a watermark: %+v", target.invs)
	}
	target.mu.Unlock()
	waitWatermark := func(want querycache.LSN) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for c.Watermark() != want {
			if time.Now().After(deadline) {
				t.Fatalf("watermark %d, want %d", c.Watermark(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if w := c.Watermark(); w != 0 {
		t.Fatalf("watermark %d before any transaction is visible", w)
	}
	vis.show(502) // the later one first: the watermark still waits for 501
	time.Sleep(20 * time.Millisecond)
	if w := c.Watermark(); w != 0 {
		t.Fatalf("watermark %d passed an invisible earlier commit", w)
	}
	vis.show(501)
	waitWatermark(210)

	// Idle progress after a visible commit moves on without asking.
	if err := c.Apply(ctx, change(503, 300, 310)); err != nil {
		t.Fatal(err)
	}
	if err := c.Progress(ctx, 400); err != nil {
		t.Fatal(err)
	}
	vis.show(503)
	waitWatermark(400)

	// Lost history drops what was waiting.
	if err := c.Apply(ctx, change(504, 500, 510)); err != nil {
		t.Fatal(err)
	}
	if err := c.HistoryLost(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	vis.show(504)
	time.Sleep(20 * time.Millisecond)
	if w := c.Watermark(); w != 400 {
		t.Fatalf("watermark %d after lost history", w)
	}
	target.mu.Lock()
	var watermarks []querycache.LSN
	for _, inv := range target.invs {
		if inv.Watermark != 0 {
			watermarks = append(watermarks, inv.Watermark)
		}
	}
	target.mu.Unlock()
	if !slices.IsSorted(watermarks) || watermarks[len(watermarks)-1] != 400 {
		t.Fatalf("watermarks applied: %v", watermarks)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run: %v", err)
	}
}

// TestSchemeActiveFromInflight: a scheme registered while a transaction is being
// tagged without it is active only from that transaction's end.
func TestSchemeActiveFromInflight(t *testing.T) {
	r := NewSchemes(0, 0)
	if from, ok := r.Activate(context.Background(), byID, 0); !ok || from != 0 {
		t.Fatalf("before any transaction: %d %v", from, ok)
	}
	r.begin(110)
	if from, ok := r.Activate(context.Background(), byOrg, 0); !ok || from != 110 {
		t.Fatalf("registered during the transaction ending at 110: %d %v", from, ok)
	}
	r.begin(210)
	if from, _ := r.Activate(context.Background(), byOrg, 0); from != 110 {
		t.Fatalf("a known scheme keeps its start: %d", from)
	}
}

// failingTarget fails every invalidation with tags, as a full Redis does, and
// records what reaches the in-process watermark alone.
type failingTarget struct {
	recordingTarget
	local []querycache.LSN
}

func (f *failingTarget) Apply(ctx context.Context, inv querycache.Invalidation) error {
	if len(inv.Tags) > 0 {
		return errors.New("OOM")
	}
	return f.recordingTarget.Apply(ctx, inv)
}

func (f *failingTarget) ApplyLocal(_ context.Context, inv querycache.Invalidation) error {
	f.mu.Lock()
	f.local = append(f.local, inv.Watermark)
	f.mu.Unlock()
	return nil
}

// TestConsumerFailedTags: a commit whose tags could not be applied everywhere
// still moves the in-process watermark once visible (so a store that missed the
// tags is behind the readers and refuses them), never the watermark the consumer
// publishes, and Apply reports the failure so the commit is delivered again.
func TestConsumerFailedTags(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	target := &failingTarget{}
	vis := &fakeVisibility{visible: map[uint32]bool{}}
	c, err := NewConsumer(ConsumerConfig{Target: target, Schemes: NewSchemes(0, 0), Visibility: vis})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Run(ctx) }()
	tx := &cdc.Transaction{Xid: 700, CommitLSN: 100, EndLSN: 110, Events: []cdc.Event{
		&cdc.RowChange{Relation: usersRel, Op: cdc.OpInsert, New: []cdc.Value{text("1"), text("7"), text("a@x")}}}}
	if err := c.Apply(ctx, tx); err == nil {
		t.Fatal("Apply hid the failure")
	}
	vis.show(700)
	deadline := time.Now().Add(5 * time.Second)
	for {
		target.mu.Lock()
		local := slices.Clone(target.local)
		target.mu.Unlock()
		if slices.Equal(local, []querycache.LSN{110}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("in-process watermark advances: %v", local)
		}
		time.Sleep(time.Millisecond)
	}
	if w := c.Watermark(); w != 0 {
		t.Fatalf("published watermark %d passed a commit whose tags failed", w)
	}
}
