package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgcache/pgcache/cdc"
)

func TestRowChangesDefaultAndFullIdentity(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE users (id int PRIMARY KEY, name text, bio text)")
	exec(t, db, "CREATE TABLE notes (id int PRIMARY KEY, body text)")
	exec(t, db, "ALTER TABLE notes REPLICA IDENTITY FULL")
	rec := &recorder{}
	streaming(t, testConfig(t, dsn), rec)

	// bio is long and incompressible, so it is stored out of line (TOAST).
	exec(t, db, "INSERT INTO users VALUES (1, 'ann', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i))")
	exec(t, db, "UPDATE users SET name = 'anne' WHERE id = 1") // key kept: no old tuple, bio unchanged
	exec(t, db, "UPDATE users SET id = 2 WHERE id = 1")        // key changed: old key
	exec(t, db, "DELETE FROM users WHERE id = 2")              // old key
	exec(t, db, "INSERT INTO notes VALUES (1, 'a'), (2, NULL)")
	exec(t, db, "UPDATE notes SET body = 'b' WHERE id = 1") // FULL: whole old row
	exec(t, db, "DELETE FROM notes WHERE id = 2")
	waitFor(t, 10*time.Second, "8 row changes", func() bool { return len(rec.rows()) >= 8 })

	rows := rec.rows()
	if len(rows) != 8 {
		t.Fatalf("got %d row changes, want 8", len(rows))
	}
	type got struct {
		rel, op string
		old     cdc.OldKind
		oldVals string
		newVals string
	}
	show := func(vals []cdc.Value) string {
		var s []string
		for _, v := range vals {
			if v.Kind == cdc.ValueText && len(v.Text) > 20 {
				s = append(s, "long")
			} else {
				s = append(s, v.String())
			}
		}
		return strings.Join(s, ",")
	}
	want := []got{
		{"public.users", "insert", cdc.OldNone, "", "1,ann,long"},
		{"public.users", "update", cdc.OldNone, "", "1,anne,(unchanged toast)"},
		{"public.users", "update", cdc.OldKey, "1,(absent),(absent)", "2,anne,(unchanged toast)"},
		{"public.users", "delete", cdc.OldKey, "2,(absent),(absent)", ""},
		{"public.notes", "insert", cdc.OldNone, "", "1,a"},
		{"public.notes", "insert", cdc.OldNone, "", "2,NULL"},
		{"public.notes", "update", cdc.OldFull, "1,a", "1,b"},
		{"public.notes", "delete", cdc.OldFull, "2,NULL", ""},
	}
	for i, r := range rows {
		g := got{r.Relation.String(), r.Op.String(), r.OldKind, show(r.Old), show(r.New)}
		if g != want[i] {
			t.Errorf("row change %d = %+v, want %+v", i, g, want[i])
		}
	}
	users, notes := rows[0].Relation, rows[4].Relation
	if users.ReplicaIdentity != cdc.ReplicaIdentityDefault || notes.ReplicaIdentity != cdc.ReplicaIdentityFull {
		t.Errorf("replica identities %v, %v; want default, full", users.ReplicaIdentity, notes.ReplicaIdentity)
	}
	wantCols := []cdc.Column{{Name: "id", TypeOID: 23, TypeModifier: -1, Key: true}, {Name: "name", TypeOID: 25, TypeModifier: -1}, {Name: "bio", TypeOID: 25, TypeModifier: -1}}
	if !reflect.DeepEqual(users.Columns, wantCols) || users.OID == 0 {
		t.Errorf("users = %+v", users)
	}
	// The insert of two rows is one transaction; commit LSNs increase.
	txs := rec.transactions()
	if len(txs) != 7 || len(txs[4].Events) != 2 {
		t.Errorf("got %d transactions (the 5th with %d events), want 7 (2)", len(txs), len(txs[4].Events))
	}
	for i := 1; i < len(txs); i++ {
		if txs[i].CommitLSN <= txs[i-1].CommitLSN || txs[i].EndLSN <= txs[i].CommitLSN {
			t.Errorf("transaction %d: commit %s after %s, end %s", i, txs[i].CommitLSN, txs[i-1].CommitLSN, txs[i].EndLSN)
		}
		if d := time.Since(txs[i].CommitTime); d < 0 || d > time.Minute {
			t.Errorf("transaction %d commit time %v", i, txs[i].CommitTime)
		}
	}
}

func TestTruncateSeveralTables(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE a (id int PRIMARY KEY)")
	exec(t, db, "CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a)")
	exec(t, db, "CREATE TABLE c (id serial PRIMARY KEY)")
	exec(t, db, "INSERT INTO a VALUES (1)")
	exec(t, db, "INSERT INTO c DEFAULT VALUES")
	rec := &recorder{}
	streaming(t, testConfig(t, dsn), rec)
	exec(t, db, "TRUNCATE a, c RESTART IDENTITY CASCADE")
	waitFor(t, 10*time.Second, "the truncate", func() bool { return len(rec.transactions()) >= 1 })
	tx := rec.transactions()[0]
	if len(tx.Events) != 1 {
		t.Fatalf("events %v, want one truncate", tx.Events)
	}
	tr, ok := tx.Events[0].(*cdc.Truncate)
	if !ok {
		t.Fatalf("event %T, want *cdc.Truncate", tx.Events[0])
	}
	var names []string
	for _, r := range tr.Relations {
		names = append(names, r.String())
	}
	if strings.Join(names, " ") != "public.a public.c public.b" && strings.Join(names, " ") != "public.a public.b public.c" || !tr.Cascade || !tr.RestartIdentity {
		t.Errorf("truncate of %v cascade %v restart identity %v", names, tr.Cascade, tr.RestartIdentity)
	}
}

func TestPartitionedTable(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE m (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region)")
	exec(t, db, "CREATE TABLE m_eu PARTITION OF m FOR VALUES IN ('eu')")
	exec(t, db, "CREATE TABLE m_us PARTITION OF m FOR VALUES IN ('us')")
	rec := &recorder{}
	streaming(t, testConfig(t, dsn), rec)
	exec(t, db, "INSERT INTO m VALUES (1, 'eu'), (2, 'us')")
	exec(t, db, "UPDATE m SET region = 'us' WHERE id = 1") // moves the row: delete + insert
	waitFor(t, 10*time.Second, "4 row changes", func() bool { return len(rec.rows()) >= 4 })
	var got []string
	for _, r := range rec.rows() {
		got = append(got, r.Op.String()+" "+r.Relation.String()+" "+value(r, "id").String())
	}
	// Without publish_via_partition_root, changes name the partition.
	want := []string{"insert public.m_eu 1", "insert public.m_us 2", "delete public.m_eu 1", "insert public.m_us 1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLargeTransactionStreams(t *testing.T) {
	const n = 100_000
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE big (id int PRIMARY KEY, v text)")
	exec(t, db, "CREATE TABLE marker (id int PRIMARY KEY)")
	rec := &recorder{}
	// The smallest logical_decoding_work_mem makes the server stream the
	// transaction long before it commits.
	streaming(t, testConfig(t, withOptions(dsn, "logical_decoding_work_mem=64kB")), rec)

	exec(t, db, fmt.Sprintf("INSERT INTO big SELECT i, 'row ' || i FROM generate_series(1, %d) i", n))
	// Rolled back after streaming: nothing of it is delivered.
	exec(t, db, "BEGIN")
	exec(t, db, fmt.Sprintf("INSERT INTO big SELECT i, 'x' FROM generate_series(%d, %d) i", n+1, 2*n))
	exec(t, db, "ROLLBACK")
	// A subtransaction rolled back in a streamed transaction: only its rows go.
	exec(t, db, "BEGIN")
	exec(t, db, "INSERT INTO big SELECT i, 'kept' FROM generate_series(-20000, -1) i")
	exec(t, db, "SAVEPOINT s")
	exec(t, db, "INSERT INTO big SELECT i, 'dropped' FROM generate_series(-40000, -20001) i")
	exec(t, db, "ROLLBACK TO SAVEPOINT s")
	exec(t, db, "INSERT INTO big VALUES (-50000, 'kept')")
	exec(t, db, "COMMIT")
	exec(t, db, "INSERT INTO marker VALUES (1)")
	waitFor(t, 60*time.Second, "the marker", func() bool {
		txs := rec.transactions()
		return len(txs) > 0 && txs[len(txs)-1].Events[0].(*cdc.RowChange).Relation.Name == "marker"
	})
	txs := rec.transactions()
	if len(txs) != 3 {
		t.Fatalf("got %d transactions, want 3 (the big one, the one with a savepoint, the marker)", len(txs))
	}
	big := txs[0]
	if !big.Streamed || len(big.Events) != n {
		t.Fatalf("big transaction: streamed %v, %d events; want streamed, %d", big.Streamed, len(big.Events), n)
	}
	for i, e := range big.Events {
		c := e.(*cdc.RowChange)
		if c.Op != cdc.OpInsert || c.New[0].Text != fmt.Sprint(i+1) || c.New[1].Text != fmt.Sprintf("row %d", i+1) {
			t.Fatalf("row %d = %v %v", i, c.Op, c.New)
		}
	}
	sp := txs[1]
	if !sp.Streamed || len(sp.Events) != 20001 {
		t.Fatalf("savepoint transaction: streamed %v, %d events; want streamed, 20001", sp.Streamed, len(sp.Events))
	}
	for _, e := range sp.Events {
		if v := e.(*cdc.RowChange).New[1].Text; v != "kept" {
			t.Fatalf("a row of the rolled-back subtransaction was delivered: %q", v)
		}
	}
}

func TestOverflowKeepsMemoryBounded(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE big (id int PRIMARY KEY, v text)")
	exec(t, db, "CREATE TABLE small (id int PRIMARY KEY)")
	rec := &recorder{}
	cfg := testConfig(t, withOptions(dsn, "logical_decoding_work_mem=64kB"))
	cfg.MaxTransactionBytes = 256 << 10
	streaming(t, cfg, rec)
	exec(t, db, "BEGIN")
	exec(t, db, "INSERT INTO small VALUES (1)")
	exec(t, db, "INSERT INTO big SELECT i, repeat('x', 100) FROM generate_series(1, 20000) i")
	exec(t, db, "SELECT pg_logical_emit_message(true, 'test', 'kept')")
	exec(t, db, "COMMIT")
	exec(t, db, "INSERT INTO small VALUES (2), (3)")
	waitFor(t, 30*time.Second, "2 transactions", func() bool { return len(rec.transactions()) >= 2 })
	txs := rec.transactions()
	var kinds []string
	for _, e := range txs[0].Events {
		switch e := e.(type) {
		case *cdc.Message:
			kinds = append(kinds, "message "+string(e.Content))
		case *cdc.Overflow:
			kinds = append(kinds, fmt.Sprintf("overflow %s %d", e.Relation, e.Changes))
		default:
			kinds = append(kinds, fmt.Sprintf("%T", e))
		}
	}
	want := []string{"message kept", "overflow public.small 1", "overflow public.big 20000"}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("overflowed transaction events %q, want %q", kinds, want)
	}
	if got := ids(rec.rows(), "id"); !reflect.DeepEqual(got, []string{"2", "3"}) {
		t.Errorf("the next transaction's rows = %v, want [2 3]", got)
	}
}

func TestRolledBackTransactionIsNotDelivered(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY)")
	rec := &recorder{}
	streaming(t, testConfig(t, dsn), rec)
	exec(t, db, "BEGIN")
	exec(t, db, "INSERT INTO t VALUES (1)")
	exec(t, db, "ROLLBACK")
	exec(t, db, "INSERT INTO t VALUES (2)")
	waitFor(t, 10*time.Second, "a transaction", func() bool { return len(rec.transactions()) >= 1 })
	time.Sleep(200 * time.Millisecond)
	if got := ids(rec.rows(), "id"); !reflect.DeepEqual(got, []string{"2"}) {
		t.Errorf("rows %v, want [2]", got)
	}
}

func TestSchemaChangesMidStream(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY, a text)")
	rec := &recorder{}
	streaming(t, testConfig(t, dsn), rec)
	exec(t, db, "INSERT INTO t VALUES (1, 'x')")
	// The DDL and an announcement of it in one transaction, as an event
	// trigger would write it.
	exec(t, db, "BEGIN")
	exec(t, db, "ALTER TABLE t ADD COLUMN b int")
	exec(t, db, "SELECT pg_logical_emit_message(true, 'pgcache.ddl', 'ALTER TABLE t')")
	exec(t, db, "INSERT INTO t VALUES (2, 'y', 3)")
	exec(t, db, "COMMIT")
	exec(t, db, "ALTER TABLE t REPLICA IDENTITY FULL")
	exec(t, db, "UPDATE t SET b = 4 WHERE id = 2")
	exec(t, db, "DROP TABLE t")
	exec(t, db, "CREATE TABLE t (id bigint PRIMARY KEY)")
	exec(t, db, "INSERT INTO t VALUES (5)")
	waitFor(t, 10*time.Second, "5 transactions", func() bool { return len(rec.transactions()) >= 4 })
	time.Sleep(200 * time.Millisecond)
	var got []string
	for _, tx := range rec.transactions() {
		var evs []string
		for _, e := range tx.Events {
			switch e := e.(type) {
			case *cdc.RowChange:
				evs = append(evs, fmt.Sprintf("%s %s(%d cols)", e.Op, e.Relation.Name, len(e.New)))
			case *cdc.RelationChange:
				evs = append(evs, fmt.Sprintf("relation %s: %d cols %v oid kept %v -> %d cols %v",
					e.Current.Name, len(e.Previous.Columns), e.Previous.ReplicaIdentity, e.Previous.OID == e.Current.OID, len(e.Current.Columns), e.Current.ReplicaIdentity))
			case *cdc.Message:
				evs = append(evs, fmt.Sprintf("message %s %s", e.Prefix, e.Content))
			}
		}
		got = append(got, strings.Join(evs, "; "))
	}
	want := []string{
		"insert t(2 cols)",
		"message pgcache.ddl ALTER TABLE t; relation t: 2 cols default oid kept true -> 3 cols default; insert t(3 cols)",
		"relation t: 3 cols default oid kept true -> 3 cols full; update t(3 cols)",
		"relation t: 3 cols full oid kept false -> 1 cols default; insert t(1 cols)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestPublicationTables(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE inside (id int PRIMARY KEY)")
	exec(t, db, "CREATE TABLE outside (id int PRIMARY KEY)")
	rec := &recorder{}
	cfg := testConfig(t, dsn)
	cfg.Publication = "only_inside"
	cfg.Tables = []string{"public.inside"}
	streaming(t, cfg, rec)
	exec(t, db, "INSERT INTO outside VALUES (1)")
	exec(t, db, "INSERT INTO inside VALUES (2)")
	waitFor(t, 10*time.Second, "a transaction", func() bool { return len(rec.transactions()) >= 1 })
	time.Sleep(200 * time.Millisecond)
	if got := ids(rec.rows(), "id"); !reflect.DeepEqual(got, []string{"2"}) {
		t.Errorf("rows %v, want [2] (only the published table)", got)
	}
}

func TestSetupErrors(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY)")
	fails := func(t *testing.T, cfg cdc.Config, target error, says string) {
		t.Helper()
		r := run(t, cfg, &recorder{})
		err := r.wait(t, 30*time.Second)
		if !cdc.IsPermanent(err) || (target != nil && !errors.Is(err, target)) || !strings.Contains(err.Error(), says) {
			t.Fatalf("Run = %v; want a permanent error (%v) that says %q", err, target, says)
		}
		if h := r.Health(); h.State != cdc.StateFailed || h.LastError != err {
			t.Errorf("health %v (%v), want failed with Run's error", h.State, h.LastError)
		}
		t.Log(err)
	}
	t.Run("publication missing", func(t *testing.T) {
		cfg := testConfig(t, dsn)
		cfg.CreatePublication = false
		fails(t, cfg, cdc.ErrPublicationMissing, `CREATE PUBLICATION "pgcache" FOR ALL TABLES`)
	})
	t.Run("publication without deletes", func(t *testing.T) {
		exec(t, db, "CREATE PUBLICATION inserts_only FOR ALL TABLES WITH (publish = 'insert')")
		cfg := testConfig(t, dsn)
		cfg.Publication = "inserts_only"
		fails(t, cfg, nil, "does not publish update, delete, truncate")
	})
	t.Run("table not in publication", func(t *testing.T) {
		exec(t, db, "CREATE PUBLICATION empty_pub")
		cfg := testConfig(t, dsn)
		cfg.Publication, cfg.Tables, cfg.CreatePublication = "empty_pub", []string{"t"}, false
		fails(t, cfg, nil, `ALTER PUBLICATION "empty_pub" ADD TABLE "t"`)
	})
	t.Run("no such table", func(t *testing.T) {
		cfg := testConfig(t, dsn)
		cfg.Publication, cfg.Tables = "other", []string{"nope"}
		fails(t, cfg, nil, "nope")
	})
	t.Run("role without REPLICATION", func(t *testing.T) {
		role := slotName(t)
		exec(t, db, "CREATE ROLE "+role+" LOGIN PASSWORD 'pw'")
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = db.Exec(ctx, "DROP ROLE IF EXISTS "+role)
		})
		userDSN := strings.Replace(dsn, "postgres:postgres@", role+":pw@", 1)
		fails(t, testConfig(t, userDSN), cdc.ErrReplicationPrivilege, "ALTER ROLE")
	})
	t.Run("slot of another plugin", func(t *testing.T) {
		cfg := testConfig(t, dsn)
		exec(t, db, "SELECT pg_create_logical_replication_slot($1, 'test_decoding')", cfg.Slot)
		fails(t, cfg, nil, "test_decoding")
	})
}

// progressRecorder records the positions an idle stream reports.
type progressRecorder struct {
	recorder
	mu        sync.Mutex
	positions []cdc.LSN
}

func (p *progressRecorder) Progress(_ context.Context, applied cdc.LSN) error {
	p.mu.Lock()
	p.positions = append(p.positions, applied)
	p.mu.Unlock()
	return nil
}

func (p *progressRecorder) last() cdc.LSN {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.positions) == 0 {
		return 0
	}
	return p.positions[len(p.positions)-1]
}

// TestRequestProgress: an idle stream asked for progress reports a position past
// WAL written since (an idle server sends its own keepalives only every
// wal_sender_timeout / 2).
func TestRequestProgress(t *testing.T) {
	dsn := newDatabase(t)
	db := connect(t, dsn)
	exec(t, db, "CREATE TABLE t (id int PRIMARY KEY)")
	rec := &progressRecorder{}
	r := streaming(t, testConfig(t, dsn), rec)
	// WAL written after the stream went idle, outside any transaction.
	var target string
	if err := db.QueryRow(context.Background(), `SELECT pg_logical_emit_message(false, 'test', 'x')::text`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	want, err := cdc.ParseLSN(target)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 5*time.Second, "progress past the message", func() bool {
		r.RequestProgress()
		return rec.last() >= want
	})
	t.Logf("progress reported %v after the request", time.Since(start).Round(time.Millisecond))
}
