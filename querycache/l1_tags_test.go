package querycache

import (
	"fmt"
	"testing"
)

func TestTagTableForgetsOldestFirst(t *testing.T) {
	tt := newTagTable(3)
	for i := 1; i <= 10; i++ {
		tt.invalidate([]Tag{Tag(fmt.Sprint("t", i))}, LSN(i*10))
	}
	// t8..t10 remembered exactly, the rest at the floor: t7's LSN.
	for i := 1; i <= 10; i++ {
		want := LSN(70)
		if i >= 8 {
			want = LSN(i * 10)
		}
		if got := tt.lastInvalidated(Tag(fmt.Sprint("t", i))); got != want {
			t.Errorf("t%d: %d, want %d", i, got, want)
		}
	}
	if got := tt.lastInvalidated("never"); got != 70 {
		t.Errorf("unknown tag: %d, want the floor 70", got)
	}
	if tt.size() != 3 {
		t.Errorf("size %d", tt.size())
	}
}

func TestTagTableReinvalidation(t *testing.T) {
	tt := newTagTable(2)
	// One tag invalidated again and again fills the ring with stale records: they
	// must be dropped without forgetting the live tags.
	tt.invalidate([]Tag{"keep"}, 5)
	for i := 1; i <= 100; i++ {
		tt.invalidate([]Tag{"hot"}, LSN(10+i))
	}
	if got := tt.lastInvalidated("keep"); got != 5 {
		t.Errorf("keep: %d, want 5 (it was never forgotten)", got)
	}
	if got := tt.lastInvalidated("hot"); got != 110 {
		t.Errorf("hot: %d", got)
	}
	if got := tt.lastInvalidated("other"); got != 0 {
		t.Errorf("floor %d, want 0: nothing was forgotten", got)
	}
	// Older and equal LSNs change nothing.
	tt.invalidate([]Tag{"hot", "keep"}, 3)
	if tt.lastInvalidated("hot") != 110 || tt.lastInvalidated("keep") != 5 {
		t.Error("a replay moved a tag back")
	}
	if len(tt.order) > tt.ringCap() {
		t.Errorf("ring grew to %d, cap %d", len(tt.order), tt.ringCap())
	}
}
