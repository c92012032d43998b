package cdc_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"

	"github.com/pgcache/pgcache/cdc"
)

// printer prints the row changes it is given.
type printer struct{}

func (printer) Apply(_ context.Context, tx *cdc.Transaction) error {
	for _, e := range tx.Events {
		switch e := e.(type) {
		case *cdc.RowChange:
			fmt.Println(tx.CommitLSN, e.Op, e.Relation, e.New)
		case *cdc.Truncate, *cdc.RelationChange, *cdc.Overflow:
			fmt.Println(tx.CommitLSN, "every row of a relation may have changed:", e)
		}
	}
	return nil
}

func (printer) HistoryLost(_ context.Context, reason string) error {
	fmt.Println("history lost, everything may have changed:", reason)
	return nil
}

func ExampleListener() {
	l, err := cdc.NewListener(cdc.Config{
		ConnString:        os.Getenv("DATABASE_URL"), // a role with REPLICATION
		Publication:       "app",
		Tables:            []string{"public.users", "public.orders"},
		CreatePublication: true,
		Slot:              "app_cache",
	}, printer{})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := l.Run(ctx); err != nil && ctx.Err() == nil {
		log.Fatal(err) // a permanent error: its message says what to change
	}
}
