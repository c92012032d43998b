package querycache

import (
	"fmt"
	"sync"
	"time"
)

// BreakerConfig configures the circuit breaker in front of the shared store.
type BreakerConfig struct {
	// Failures is how many consecutive failed calls open the breaker. default: 5
	Failures int
	// Cooldown is how long an open breaker refuses calls before it lets one probe
	// through (half-open). It doubles after each failed probe. default: 1s
	Cooldown time.Duration
	// MaxCooldown caps the doubled cool-down. default: 30s, or Cooldown if longer
	MaxCooldown time.Duration
}

// Breaker defaults.
const (
	DefaultBreakerFailures    = 5
	DefaultBreakerCooldown    = time.Second
	DefaultBreakerMaxCooldown = 30 * time.Second
)

func (c BreakerConfig) withDefaults() BreakerConfig {
	if c.Failures == 0 {
		c.Failures = DefaultBreakerFailures
	}
	if c.Cooldown == 0 {
		c.Cooldown = DefaultBreakerCooldown
	}
	if c.MaxCooldown == 0 {
		c.MaxCooldown = max(DefaultBreakerMaxCooldown, c.Cooldown)
	}
	return c
}

func (c BreakerConfig) validate() error {
	if c.Failures < 0 || c.Cooldown < 0 || c.MaxCooldown < c.Cooldown {
		return fmt.Errorf("querycache: invalid breaker config %+v", c)
	}
	return nil
}

type breakerState uint8

const (
	breakerClosed   breakerState = iota // calls go through
	breakerOpen                         // calls are refused until the cool-down ends
	breakerHalfOpen                     // one probe call is out; the others are refused
)

// breaker stops calls to a server that keeps failing: after Failures consecutive
// failures it refuses calls for a cool-down, then lets one probe through; the
// probe's success closes it, its failure opens it again for twice as long.
//
// The closed state, the common case, costs one mutex round trip per call; a dead
// server is not called at all while the breaker is open.
type breaker struct {
	cfg   BreakerConfig
	clock Clock
	stats *counters

	mu       sync.Mutex
	state    breakerState
	failures int
	cooldown time.Duration
	until    time.Time
}

func newBreaker(cfg BreakerConfig, clock Clock, stats *counters) *breaker {
	return &breaker{cfg: cfg, clock: clock, stats: stats, cooldown: cfg.Cooldown}
}

// allow reports whether a call may go to the server. A true answer must be
// followed by exactly one record.
func (b *breaker) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case breakerClosed:
		return true
	case breakerOpen:
		if !b.clock.Now().Before(b.until) {
			b.state = breakerHalfOpen
			return true
		}
	}
	b.stats.breakerOpen.Add(1)
	return false
}

// outcome is what a call allowed by the breaker says about the server.
type outcome uint8

const (
	callOK      outcome = iota // the server answered (a miss and a refused write are answers)
	callFailed                 // the server is unwell: unreachable, timed out, refused us
	callUnknown                // the call ended for the caller's own reasons (cancelled)
)

// record reports the outcome of an allowed call.
func (b *breaker) record(o outcome) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch o {
	case callOK:
		b.state = breakerClosed
		b.failures = 0
		b.cooldown = b.cfg.Cooldown
		return
	case callUnknown:
		if b.state == breakerHalfOpen {
			// The probe told nothing: let the next call probe.
			b.state = breakerOpen
			b.until = b.clock.Now()
		}
		return
	}
	switch b.state {
	case breakerHalfOpen:
		b.cooldown = min(2*b.cooldown, b.cfg.MaxCooldown)
		b.open()
	case breakerClosed:
		b.failures++
		if b.failures >= b.cfg.Failures {
			b.open()
		}
	}
}

func (b *breaker) open() {
	b.state = breakerOpen
	b.failures = 0
	b.until = b.clock.Now().Add(b.cooldown)
	b.stats.breakerTrips.Add(1)
}

// isOpen reports whether calls are being refused now (for Usable-style reporting).
func (b *breaker) isOpen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state != breakerClosed
}
