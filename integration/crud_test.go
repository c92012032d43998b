package integration_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
)

// trace records the steps of a piece of work, values and errors alike, so one
// comparison covers a whole sequence and shows the first step that differs.
type trace []step

type step struct {
	Name  string
	Value any
	Err   *errShape
}

func (tr *trace) add(name string, value any, err error) {
	*tr = append(*tr, step{Name: name, Value: value, Err: shapeOf(err)})
}

// get returns the step of that name; a missing step fails the test.
func (tr trace) get(t *testing.T, name string) step {
	t.Helper()
	for _, s := range tr {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %q in %v", name, tr)
	return step{}
}

// wantOK fails the test when the named steps failed.
func (tr trace) wantOK(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if s := tr.get(t, name); s.Err != nil {
			t.Errorf("%s: %s", name, s.Err.Text)
		}
	}
}

// wantState fails the test unless the named step failed with that SQLSTATE.
func (tr trace) wantState(t *testing.T, name, sqlState string) {
	t.Helper()
	s := tr.get(t, name)
	if s.Err == nil || s.Err.PgError == nil || s.Err.PgError.Code != sqlState {
		t.Errorf("%s: error %+v, want SQLSTATE %s", name, s.Err, sqlState)
	}
}

// wantErr fails the test unless the named step failed with exactly that text.
func (tr trace) wantErr(t *testing.T, name, text string) {
	t.Helper()
	if s := tr.get(t, name); s.Err == nil || s.Err.Text != text {
		t.Errorf("%s: error %+v, want %q", name, s.Err, text)
	}
}

// itemsSetup recreates the table of the CRUD, statement and transaction tests.
var itemsSetup = []string{
	`DROP TABLE IF EXISTS items`,
	`CREATE TABLE items (
		id   serial PRIMARY KEY,
		name text NOT NULL UNIQUE,
		qty  int NOT NULL CHECK (qty >= 0),
		note text
	)`,
	`INSERT INTO items (name, qty) VALUES ('apple', 3), ('pear', 0)`,
}

// queryItems returns the table's rows in order, for the state after a piece of work.
func queryItems(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) ([][]any, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, name, qty, note FROM items ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		var id, qty int64
		var name string
		var note sql.NullString
		if err := rows.Scan(&id, &name, &qty, &note); err != nil {
			return out, err
		}
		out = append(out, []any{id, name, qty, note})
	}
	return out, rows.Err()
}

func TestCRUD(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tr, _ := compare(t, e, check[trace]{setup: itemsSetup, work: func(ctx context.Context, db *sql.DB) (trace, error) {
		var tr trace
		var id int64
		err := db.QueryRowContext(ctx, `INSERT INTO items (name, qty, note) VALUES ($1, $2, $3) RETURNING id`, "plum", 7, nil).Scan(&id)
		tr.add("insert returning", id, err)

		res, err := db.ExecContext(ctx, `INSERT INTO items (name, qty) VALUES ($1, $2), ($3, $4)`, "fig", 1, "kiwi", 2)
		tr.add("insert exec", nil, err)
		if err == nil {
			n, err := res.RowsAffected()
			tr.add("insert rows affected", n, err)
			last, err := res.LastInsertId()
			tr.add("last insert id", last, err)
		}

		res, err = db.ExecContext(ctx, `UPDATE items SET qty = qty + 1, note = $1 WHERE qty < $2`, "restocked", 3)
		tr.add("update", nil, err)
		if err == nil {
			n, err := res.RowsAffected()
			tr.add("update rows affected", n, err)
		}
		res, err = db.ExecContext(ctx, `DELETE FROM items WHERE name = $1`, "kiwi")
		tr.add("delete", nil, err)
		if err == nil {
			n, err := res.RowsAffected()
			tr.add("delete rows affected", n, err)
		}
		res, err = db.ExecContext(ctx, `DELETE FROM items WHERE name = 'none'`)
		tr.add("delete nothing", nil, err)
		if err == nil {
			n, err := res.RowsAffected()
			tr.add("delete nothing rows affected", n, err)
		}
		rows, err := queryItems(ctx, db)
		tr.add("select", rows, err)

		var name string
		tr.add("select no rows", nil, db.QueryRowContext(ctx, `SELECT name FROM items WHERE id = -1`).Scan(&name))
		return tr, nil
	}})
	tr.wantOK(t, "insert returning", "insert exec", "update", "delete", "select")
	if got := tr.get(t, "insert rows affected").Value; got != int64(2) {
		t.Errorf("insert affected %v rows, want 2", got)
	}
	if got := tr.get(t, "update rows affected").Value; got != int64(3) {
		t.Errorf("update affected %v rows, want 3", got)
	}
	if got := tr.get(t, "select").Value.([][]any); len(got) != 4 {
		t.Errorf("select after CRUD: %v", got)
	}
	tr.wantErr(t, "last insert id", "LastInsertId is not supported by this driver")
	tr.wantErr(t, "select no rows", sql.ErrNoRows.Error())
}

// TestStatementErrors compares the errors of statements the server refuses, before
// and in the middle of a result.
func TestStatementErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tr, _ := compare(t, e, check[trace]{setup: itemsSetup, work: func(ctx context.Context, db *sql.DB) (trace, error) {
		var tr trace
		exec := func(name, query string, args ...any) {
			_, err := db.ExecContext(ctx, query, args...)
			tr.add(name, nil, err)
		}
		exec("unique", `INSERT INTO items (name, qty) VALUES ('apple', 1)`)
		exec("check", `INSERT INTO items (name, qty) VALUES ('x', $1)`, -1)
		exec("not null", `INSERT INTO items (name, qty) VALUES (NULL, 1)`)
		exec("syntax", `SELEC 1`)
		exec("undefined table", `SELECT * FROM nowhere`)
		exec("undefined column with args", `SELECT nothing FROM items WHERE id = $1`, 1)
		exec("raise", `DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING DETAIL = 'the detail', HINT = 'a hint', ERRCODE = 'P0042'; END $$`)
		exec("multi-statement", `INSERT INTO items (name, qty) VALUES ('m1', 1); INSERT INTO items (name, qty) VALUES ('m2', 2)`)
		exec("multi-statement failing", `INSERT INTO items (name, qty) VALUES ('m3', 1); SELECT 1/0`)

		// The error comes after the first rows have been sent.
		rows, err := db.QueryContext(ctx, `SELECT 10 / (3 - g) FROM generate_series(1, 5) g`)
		tr.add("division query", nil, err)
		if err == nil {
			var got []int64
			for rows.Next() {
				var v int64
				if err := rows.Scan(&v); err != nil {
					tr.add("division scan", v, err)
				}
				got = append(got, v)
			}
			tr.add("division rows", got, rows.Err())
			tr.add("division close", nil, rows.Close())
		}
		items, err := queryItems(ctx, db)
		tr.add("items after", items, err)
		return tr, nil
	}})
	tr.wantState(t, "unique", "23505")
	tr.wantState(t, "check", "23514")
	tr.wantState(t, "not null", "23502")
	tr.wantState(t, "syntax", "42601")
	tr.wantState(t, "undefined table", "42P01")
	tr.wantState(t, "undefined column with args", "42703")
	tr.wantState(t, "raise", "P0042")
	tr.wantOK(t, "multi-statement")
	tr.wantState(t, "multi-statement failing", "22012")
	tr.wantState(t, "division rows", "22012")
	if got := tr.get(t, "division rows").Value.([]int64); len(got) != 2 {
		t.Errorf("rows before the error: %v, want 2", got)
	}
}

func TestPreparedStatements(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tr, _ := compare(t, e, check[trace]{setup: itemsSetup, work: func(ctx context.Context, db *sql.DB) (trace, error) {
		var tr trace
		// One connection, so the server's list of prepared statements is observable.
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		prepared := func(name string) {
			var n int
			err := conn.QueryRowContext(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'INSERT INTO items%'`).Scan(&n)
			tr.add(name, n, err)
		}

		ins, err := conn.PrepareContext(ctx, `INSERT INTO items (name, qty) VALUES ($1, $2) RETURNING id`)
		tr.add("prepare insert", nil, err)
		if err != nil {
			return tr, nil
		}
		prepared("prepared after prepare")
		for i := range 3 {
			var id int64
			err := ins.QueryRowContext(ctx, fmt.Sprintf("item%d", i), i).Scan(&id)
			tr.add(fmt.Sprintf("insert %d", i), id, err)
		}
		var id int64
		tr.add("insert duplicate", nil, ins.QueryRowContext(ctx, "item0", 1).Scan(&id))
		tr.add("insert too few arguments", nil, ins.QueryRowContext(ctx, "only").Scan(&id))
		tr.add("close", nil, ins.Close())
		prepared("prepared after close")
		tr.add("use after close", nil, ins.QueryRowContext(ctx, "late", 1).Scan(&id))

		_, err = conn.PrepareContext(ctx, `SELECT FROM WHERE`)
		tr.add("prepare syntax error", nil, err)
		_, err = conn.PrepareContext(ctx, `SELECT * FROM nowhere WHERE id = $1`)
		tr.add("prepare undefined table", nil, err)

		// A statement prepared on the *sql.DB, used from the pool and inside a transaction.
		sel, err := db.PrepareContext(ctx, `SELECT name FROM items WHERE qty >= $1 ORDER BY id`)
		tr.add("prepare select", nil, err)
		if err != nil {
			return tr, nil
		}
		defer sel.Close()
		for _, min := range []int{0, 2, 100} {
			var names []string
			rows, err := sel.QueryContext(ctx, min)
			if err == nil {
				for rows.Next() {
					var n string
					err = rows.Scan(&n)
					names = append(names, n)
				}
				if err == nil {
					err = rows.Err()
				}
				rows.Close()
			}
			tr.add(fmt.Sprintf("select qty >= %d", min), names, err)
		}
		tx, err := db.BeginTx(ctx, nil)
		tr.add("begin", nil, err)
		if err == nil {
			var name string
			err = tx.StmtContext(ctx, sel).QueryRowContext(ctx, 3).Scan(&name)
			tr.add("select in tx", name, err)
			tr.add("rollback", nil, tx.Rollback())
		}
		return tr, nil
	}})
	tr.wantOK(t, "prepare insert", "insert 0", "insert 2", "close", "prepare select", "select in tx")
	tr.wantState(t, "insert duplicate", "23505")
	tr.wantErr(t, "insert too few arguments", "sql: expected 2 arguments, got 1")
	tr.wantErr(t, "use after close", "sql: statement is closed")
	tr.wantState(t, "prepare syntax error", "42601")
	tr.wantState(t, "prepare undefined table", "42P01")
	if n := tr.get(t, "prepared after prepare").Value; n != 1 {
		t.Errorf("server-side statements after Prepare: %v, want 1", n)
	}
	if n := tr.get(t, "prepared after close").Value; n != 0 {
		t.Errorf("server-side statements after Close: %v, want 0", n)
	}
	if names := tr.get(t, "select qty >= 2").Value.([]string); len(names) != 2 {
		t.Errorf("select qty >= 2: %v", names)
	}
}

func TestTransactionIsolationLevels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	levels := []sql.IsolationLevel{
		sql.LevelDefault, sql.LevelReadUncommitted, sql.LevelReadCommitted, sql.LevelWriteCommitted,
		sql.LevelRepeatableRead, sql.LevelSnapshot, sql.LevelSerializable, sql.LevelLinearizable,
	}
	for _, level := range levels {
		for _, commit := range []bool{true, false} {
			t.Run(fmt.Sprintf("%v/commit=%v", level, commit), func(t *testing.T) {
				tr, _ := compare(t, e, check[trace]{setup: itemsSetup, work: func(ctx context.Context, db *sql.DB) (trace, error) {
					var tr trace
					tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: level})
					tr.add("begin", nil, err)
					if err != nil {
						return tr, nil
					}
					var iso, ro string
					err = tx.QueryRowContext(ctx, `SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')`).Scan(&iso, &ro)
					tr.add("settings", []string{iso, ro}, err)
					_, err = tx.ExecContext(ctx, `INSERT INTO items (name, qty) VALUES ('in tx', 5)`)
					tr.add("insert", nil, err)
					// Another session commits a row meanwhile: what the transaction
					// sees of it depends on the level.
					mustExec(t, e.admin, `INSERT INTO items (name, qty) VALUES ('outside', 1)`)
					items, err := queryItems(ctx, tx)
					tr.add("select in tx", items, err)
					if commit {
						tr.add("end", nil, tx.Commit())
					} else {
						tr.add("end", nil, tx.Rollback())
					}
					tr.add("end again", nil, tx.Commit())
					items, err = queryItems(ctx, db)
					tr.add("select after", items, err)
					return tr, nil
				}})
				switch level {
				case sql.LevelWriteCommitted, sql.LevelLinearizable:
					// pgx names the level by number: driver.IsolationLevel has no String.
					tr.wantErr(t, "begin", fmt.Sprintf("unsupported isolation: %d", level))
					return
				}
				tr.wantOK(t, "begin", "settings", "insert", "select in tx", "end", "select after")
				tr.wantErr(t, "end again", sql.ErrTxDone.Error())
				wantIso := map[sql.IsolationLevel]string{
					sql.LevelDefault: "read committed", sql.LevelReadUncommitted: "read uncommitted",
					sql.LevelReadCommitted: "read committed", sql.LevelRepeatableRead: "repeatable read",
					sql.LevelSnapshot: "repeatable read", sql.LevelSerializable: "serializable",
				}[level]
				if got := tr.get(t, "settings").Value.([]string); got[0] != wantIso || got[1] != "off" {
					t.Errorf("transaction settings %v, want %s, read-write", got, wantIso)
				}
				wantRows := 2 + 1 + 1 // seeded, own insert, the other session's
				if level >= sql.LevelRepeatableRead {
					wantRows-- // the snapshot predates the other session's commit
				}
				if got := tr.get(t, "select in tx").Value.([][]any); len(got) != wantRows {
					t.Errorf("rows seen in the transaction: %d, want %d", len(got), wantRows)
				}
			})
		}
	}
}

func TestTransactionReadOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tr, _ := compare(t, e, check[trace]{setup: itemsSetup, work: func(ctx context.Context, db *sql.DB) (trace, error) {
		var tr trace
		tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelSerializable})
		tr.add("begin", nil, err)
		if err != nil {
			return tr, nil
		}
		var ro string
		err = tx.QueryRowContext(ctx, `SELECT current_setting('transaction_read_only')`).Scan(&ro)
		tr.add("read only setting", ro, err)
		items, err := queryItems(ctx, tx)
		tr.add("select", items, err)
		_, err = tx.ExecContext(ctx, `INSERT INTO items (name, qty) VALUES ('rejected', 1)`)
		tr.add("insert", nil, err)
		_, err = tx.ExecContext(ctx, `SELECT 1`)
		tr.add("after the error", nil, err)
		tr.add("commit", nil, tx.Commit())
		items, err = queryItems(ctx, db)
		tr.add("select after", items, err)
		return tr, nil
	}})
	tr.wantOK(t, "begin", "read only setting", "select", "select after")
	if ro := tr.get(t, "read only setting").Value; ro != "on" {
		t.Errorf("transaction_read_only = %v, want on", ro)
	}
	tr.wantState(t, "insert", "25006")
	tr.wantState(t, "after the error", "25P02")
	if s := tr.get(t, "commit"); s.Err == nil {
		t.Error("commit of an aborted transaction succeeded")
	}
	if got := tr.get(t, "select after").Value.([][]any); len(got) != 2 {
		t.Errorf("rows after the read-only transaction: %v", got)
	}
}

// TestTransactionSerializationFailure makes two serializable transactions conflict:
// the loser's error (SQLSTATE 40001) must reach the application unchanged.
func TestTransactionSerializationFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tr, _ := compare(t, e, check[trace]{setup: itemsSetup, work: func(ctx context.Context, db *sql.DB) (trace, error) {
		var tr trace
		opts := &sql.TxOptions{Isolation: sql.LevelSerializable}
		tx1, err := db.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		defer tx1.Rollback()
		tx2, err := db.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		defer tx2.Rollback()
		var sum1, sum2 int64
		tr.add("read 1", nil, tx1.QueryRowContext(ctx, `SELECT sum(qty) FROM items`).Scan(&sum1))
		tr.add("read 2", nil, tx2.QueryRowContext(ctx, `SELECT sum(qty) FROM items`).Scan(&sum2))
		_, err = tx1.ExecContext(ctx, `INSERT INTO items (name, qty) VALUES ('sum1', $1)`, sum1)
		tr.add("write 1", nil, err)
		_, err = tx2.ExecContext(ctx, `INSERT INTO items (name, qty) VALUES ('sum2', $1)`, sum2)
		tr.add("write 2", nil, err)
		tr.add("commit 1", nil, tx1.Commit())
		tr.add("commit 2", nil, tx2.Commit())
		return tr, nil
	}})
	tr.wantOK(t, "read 1", "read 2", "write 1", "write 2", "commit 1")
	tr.wantState(t, "commit 2", "40001")
}
