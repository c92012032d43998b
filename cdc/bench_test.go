package cdc_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgcache/pgcache/cdc"
)

// counter is a Consumer that only counts row changes and, when asked, records
// each transaction's commit-to-delivery latency.
type counter struct {
	rows      atomic.Int64
	mu        sync.Mutex
	latencies []time.Duration
	record    bool
}

func (c *counter) Apply(_ context.Context, tx *cdc.Transaction) error {
	if c.record {
		d := time.Since(tx.CommitTime)
		c.mu.Lock()
		c.latencies = append(c.latencies, d)
		c.mu.Unlock()
	}
	c.rows.Add(int64(len(tx.Events)))
	return nil
}

func (c *counter) HistoryLost(context.Context, string) error { return nil }

// BenchmarkDeliver measures decoding and delivery to a no-op consumer: b.N rows
// (transactions of 100 rows of 3 columns) are committed while nothing reads
// the slot, then the timer runs while a listener catches up on them. The
// server's decoding shares the machine, so this is the whole pipeline's
// throughput. "raw" is the ceiling in the same conditions: a receiver that
// reads the stream with pglogrepl and decodes nothing.
func BenchmarkDeliver(b *testing.B) {
	setup := func(b *testing.B) (cdc.Config, *pgx.Conn) {
		dsn := newDatabase(b)
		db := connect(b, dsn)
		exec(b, db, "CREATE TABLE t (id int PRIMARY KEY, name text, n bigint)")
		cfg := testConfig(b, dsn)
		exec(b, db, "CREATE PUBLICATION pgcache FOR ALL TABLES")
		exec(b, db, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", cfg.Slot)
		for i := 0; i < b.N; i += 100 {
			exec(b, db, "INSERT INTO t SELECT i, 'name ' || i, i * 1000 FROM generate_series($1::int, $2::int) i", i+1, min(i+100, b.N))
		}
		return cfg, db
	}
	b.Run("listener", func(b *testing.B) {
		cfg, _ := setup(b)
		c := &counter{}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		r := run(b, cfg, c)
		for c.rows.Load() < int64(b.N) {
			time.Sleep(time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		r.stop()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "changes/s")
	})
	b.Run("raw", func(b *testing.B) {
		cfg, _ := setup(b)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		pgcfg, err := pgconn.ParseConfig(cfg.ConnString)
		if err != nil {
			b.Fatal(err)
		}
		pgcfg.RuntimeParams["replication"] = "database"
		conn, err := pgconn.ConnectConfig(ctx, pgcfg)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		err = pglogrepl.StartReplication(ctx, conn, cfg.Slot, 0, pglogrepl.StartReplicationOptions{
			Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '2'", "publication_names 'pgcache'"}})
		if err != nil {
			b.Fatal(err)
		}
		for n := 0; n < b.N; {
			msg, err := conn.ReceiveMessage(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if cd, ok := msg.(*pgproto3.CopyData); ok && cd.Data[0] == pglogrepl.XLogDataByteID && cd.Data[25] == 'I' {
				n++
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "changes/s")
	})
}

// BenchmarkLatency measures commit-to-delivery latency (from the commit
// timestamp PostgreSQL records to the call of Apply; the server runs on this
// machine, on the same clock) at a steady 2,000 single-row transactions per
// second. Use -benchtime=10000x for 5 s of traffic. "raw" is the same for a
// receiver that reads the stream with pglogrepl, finds each commit message and
// decodes nothing else: the floor in the same conditions.
func BenchmarkLatency(b *testing.B) {
	const rate = 2000
	b.Run("listener", func(b *testing.B) {
		dsn := newDatabase(b)
		db := connect(b, dsn)
		exec(b, db, "CREATE TABLE t (id int PRIMARY KEY, name text, n bigint)")
		c := &counter{record: true}
		streaming(b, testConfig(b, dsn), c)
		achieved := writeAt(b, dsn, rate)
		for c.rows.Load() < int64(b.N) {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		c.mu.Lock()
		defer c.mu.Unlock()
		reportLatencies(b, achieved, c.latencies)
	})
	b.Run("raw", func(b *testing.B) {
		dsn := newDatabase(b)
		db := connect(b, dsn)
		exec(b, db, "CREATE TABLE t (id int PRIMARY KEY, name text, n bigint)")
		exec(b, db, "CREATE PUBLICATION pgcache FOR ALL TABLES")
		slot := slotName(b)
		exec(b, db, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
		ctx := context.Background()
		pgcfg, err := pgconn.ParseConfig(dsn)
		if err != nil {
			b.Fatal(err)
		}
		pgcfg.RuntimeParams["replication"] = "database"
		conn, err := pgconn.ConnectConfig(ctx, pgcfg)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
			Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '2'", "publication_names 'pgcache'"}})
		if err != nil {
			b.Fatal(err)
		}
		latencies := make(chan []time.Duration, 1)
		go func() {
			var lat []time.Duration
			for len(lat) < b.N {
				msg, err := conn.ReceiveMessage(ctx)
				if err != nil {
					b.Error(err)
					break
				}
				if cd, ok := msg.(*pgproto3.CopyData); ok && cd.Data[0] == pglogrepl.XLogDataByteID && cd.Data[25] == 'C' {
					var m pglogrepl.CommitMessage
					if err := m.Decode(cd.Data[26:]); err != nil {
						b.Error(err)
						break
					}
					lat = append(lat, time.Since(m.CommitTime))
				}
			}
			latencies <- lat
		}()
		achieved := writeAt(b, dsn, rate)
		lat := <-latencies
		b.StopTimer()
		reportLatencies(b, achieved, lat)
	})
}

// writeAt commits b.N single-row transactions at rate per second and returns
// the rate achieved. Writers commit with synchronous_commit = on, as in
// production; several of them, as one connection alone may not keep up.
func writeAt(b *testing.B, dsn string, rate int) float64 {
	const writers = 4
	conns := make([]*pgx.Conn, writers)
	for w := range conns {
		conns[w] = connect(b, dsn)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w, conn := range conns {
		wg.Go(func() {
			for i := w; i < b.N; i += writers {
				if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > 0 {
					time.Sleep(wait)
				}
				if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1, 'x', 1)", i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(b.N) / time.Since(start).Seconds()
}

func reportLatencies(b *testing.B, achieved float64, lat []time.Duration) {
	if len(lat) == 0 {
		b.Fatal("no latencies")
	}
	lat = slices.Clone(lat)
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(achieved, "changes/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
	if testing.Verbose() {
		b.Log(fmt.Sprintf("%d transactions at %.0f/s: p50 %.2f ms, p99 %.2f ms, max %.2f ms", len(lat), achieved, pct(0.5), pct(0.99), pct(1)))
	}
}
