package invalidate

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgcache/pgcache/pgcachetest"
)

// TestSharedSchemesAdoption: an instance's new scheme is pending until the consumer
// adopts it between two transactions; from then on the consumer tags with it, and
// the instance may rely on it for entries stamped at or after the adoption point.
func TestSharedSchemesAdoption(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := pgcachetest.SharedRedis(t).Client()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	key := fmt.Sprintf("test:{schemes-%d}", time.Now().UnixNano())
	instance, err := NewSharedSchemes(SharedSchemesConfig{Client: client, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	leader, err := NewSharedSchemes(SharedSchemesConfig{Client: client, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := instance.Activate(ctx, byOrg, 0); ok {
		t.Fatal("a new scheme was usable before the consumer adopted it")
	}
	if len(leader.Of(users)) != 0 {
		t.Fatal("the consumer tags with a scheme it has not adopted")
	}
	// The consumer's registry learns of the pending scheme, and adopts it at its
	// next transaction boundary, at watermark 500.
	if err := leader.sync(ctx, true); err != nil {
		t.Fatal(err)
	}
	if len(leader.Of(users)) != 0 {
		t.Fatal("adopted before a transaction boundary")
	}
	leader.adopt(500)
	if got := leader.Of(users); len(got) != 1 {
		t.Fatalf("after adoption the consumer tags with %v", got)
	}
	if err := leader.sync(ctx, true); err != nil { // writes activeFrom
		t.Fatal(err)
	}
	if err := instance.sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	from, ok := instance.Activate(ctx, byOrg, 0)
	if !ok || from != 500 {
		t.Fatalf("Activate after adoption = %d, %v; want 500, true", from, ok)
	}
	// A new consumer (failover) takes every scheme before applying anything.
	next, err := NewSharedSchemes(SharedSchemesConfig{Client: client, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if err := next.adoptAll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := next.Of(users); len(got) != 1 {
		t.Fatalf("a new consumer tags with %v", got)
	}
}
