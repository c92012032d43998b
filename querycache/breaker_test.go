package querycache

import (
	"sync"
	"testing"
	"time"
)

// manualClock is a Clock that moves only when told.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestBreaker(t *testing.T) {
	clock := &manualClock{now: time.Unix(1000, 0)}
	stats := new(counters)
	b := newBreaker(BreakerConfig{Failures: 3, Cooldown: time.Second, MaxCooldown: 3 * time.Second}.withDefaults(), clock, stats)

	call := func(o outcome) bool {
		if !b.allow() {
			return false
		}
		b.record(o)
		return true
	}
	// Failures below the threshold, interrupted by a success, do not open it.
	for _, o := range []outcome{callFailed, callFailed, callOK, callFailed, callFailed, callUnknown} {
		if !call(o) {
			t.Fatal("breaker opened below the threshold")
		}
	}
	if !call(callFailed) {
		t.Fatal("refused before opening")
	}
	if b.allow() {
		t.Fatal("open after 3 consecutive failures, yet allowed a call")
	}
	clock.advance(999 * time.Millisecond)
	if b.allow() {
		t.Fatal("allowed before the cool-down ended")
	}
	clock.advance(time.Millisecond)
	if !b.allow() {
		t.Fatal("no probe after the cool-down")
	}
	if b.allow() {
		t.Fatal("a second call while the probe is out")
	}
	b.record(callFailed) // the probe failed: open for twice as long
	clock.advance(time.Second)
	if b.allow() {
		t.Fatal("cool-down not doubled")
	}
	clock.advance(time.Second)
	if !b.allow() {
		t.Fatal("no probe after the doubled cool-down")
	}
	b.record(callFailed)
	clock.advance(3 * time.Second) // capped at MaxCooldown
	if !b.allow() {
		t.Fatal("cool-down not capped")
	}
	b.record(callUnknown) // a probe cancelled by its caller tells nothing: probe again
	if !b.allow() {
		t.Fatal("no new probe after an inconclusive one")
	}
	b.record(callOK)
	for i := 0; i < 2; i++ {
		if !call(callFailed) {
			t.Fatal("closed breaker refused")
		}
	}
	if !call(callOK) || b.isOpen() {
		t.Fatal("did not close after a successful probe")
	}
	// The cool-down was reset by the success.
	for i := 0; i < 3; i++ {
		call(callFailed)
	}
	clock.advance(time.Second)
	if !b.allow() {
		t.Fatal("cool-down not reset after closing")
	}
	if s := stats.snapshot(); s.BreakerTrips != 4 || s.BreakerOpen != 4 {
		t.Fatalf("trips %d, refused %d", s.BreakerTrips, s.BreakerOpen)
	}
}
