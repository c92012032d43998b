package querycache

import "time"

// Clock tells the time to the parts of the cache that measure it (the circuit
// breaker's cool-down). Tests give a manual clock to make time-dependent behaviour
// deterministic.
type Clock interface {
	Now() time.Time
}

// systemClock is the wall clock with its monotonic reading.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
