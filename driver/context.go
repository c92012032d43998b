package driver

import (
	"context"
	"time"
)

type ctxKey int

const (
	ctxNoCache ctxKey = iota
	ctxTTL
)

// WithoutCache returns a context whose queries bypass the cache: they are neither
// answered from it nor stored in it (as /* pgcache:off */ in the statement).
func WithoutCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, ctxNoCache, true)
}

// WithTTL returns a context whose cached queries are stored with the given TTL
// (as /* pgcache:ttl=30s */ in the statement, which it overrides). The TTL is a
// backstop for lost invalidations, not how entries normally leave the cache.
func WithTTL(ctx context.Context, ttl time.Duration) context.Context {
	return context.WithValue(ctx, ctxTTL, ttl)
}

func cacheOff(ctx context.Context) bool {
	off, _ := ctx.Value(ctxNoCache).(bool)
	return off
}

func ttlFrom(ctx context.Context) (time.Duration, bool) {
	ttl, ok := ctx.Value(ctxTTL).(time.Duration)
	return ttl, ok && ttl > 0
}
