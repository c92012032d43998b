package querycache

import (
	"testing"
	"time"
)

func TestWatermarkHistory(t *testing.T) {
	h := watermarkHistory{grace: 50 * time.Millisecond}
	t0 := time.Unix(1000, 0)
	if got := h.at(t0); got != 0 {
		t.Fatalf("empty history: %d", got)
	}
	h.record(t0, 10)
	h.record(t0.Add(5*time.Millisecond), 20) // too soon after the last sample: not kept
	h.record(t0.Add(30*time.Millisecond), 30)
	h.record(t0.Add(100*time.Millisecond), 40)
	tests := []struct {
		at   time.Duration
		want LSN
	}{
		{10 * time.Millisecond, 0},   // nothing is 50ms old yet
		{55 * time.Millisecond, 10},  // the 20 of t0+5ms was never recorded: lower is safe
		{80 * time.Millisecond, 30},  // t0+30ms is 50ms old
		{149 * time.Millisecond, 30}, // t0+100ms is not yet
		{150 * time.Millisecond, 40},
		{time.Hour, 40}, // idle: the last value stays
	}
	for _, tt := range tests {
		if got := h.at(t0.Add(tt.at)); got != tt.want {
			t.Errorf("at t0+%v: %d, want %d", tt.at, got, tt.want)
		}
	}
	h.reset(t0.Add(200*time.Millisecond), 5)
	if got := h.at(t0.Add(210 * time.Millisecond)); got != 0 {
		t.Errorf("after a reset, within the grace: %d", got)
	}
	if got := h.at(t0.Add(260 * time.Millisecond)); got != 5 {
		t.Errorf("after a reset: %d", got)
	}
	if got := (&watermarkHistory{grace: -1}).at(t0); got != ^LSN(0) {
		t.Errorf("disabled: %d", got)
	}
}
