package integration_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pgcache/pgcache/driver"
	"github.com/pgcache/pgcache/pgcachetest"
)

// TestContextCancelledMidQuery cancels queries while the server runs them: the
// error must be pgx's, and the pool must go on serving queries afterwards.
func TestContextCancelledMidQuery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, db := range []*sql.DB{e.ref.db, e.pgcache()} {
		db.SetMaxOpenConns(3)
	}
	const sleep = 5 * time.Second
	tr, _ := compare(t, e, check[trace]{setup: itemsSetup, work: func(ctx context.Context, db *sql.DB) (trace, error) {
		var tr trace
		// interrupted runs do on a connection of the pool under a context that ends
		// mid-query, and records its error and whether it returned promptly. The
		// connection is taken first, so the context ends during the query and not
		// during a connect; it goes back to the pool broken, and the pool must cope.
		interrupted := func(name string, end func() (context.Context, context.CancelFunc), do func(context.Context, *sql.Conn) error) {
			conn, err := db.Conn(ctx)
			if err != nil {
				tr.add(name+": conn", nil, err)
				return
			}
			defer conn.Close()
			qctx, cancel := end()
			defer cancel()
			start := time.Now()
			err = do(qctx, conn)
			tr.add(name, time.Since(start) < sleep/2, err)
		}
		cancelSoon := func() (context.Context, context.CancelFunc) {
			qctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(200*time.Millisecond, cancel)
			return qctx, cancel
		}
		timeoutSoon := func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, 200*time.Millisecond)
		}
		sleepSQL := fmt.Sprintf("SELECT pg_sleep(%d)", int(sleep.Seconds()))
		interrupted("exec cancelled", cancelSoon, func(qctx context.Context, conn *sql.Conn) error {
			_, err := conn.ExecContext(qctx, sleepSQL)
			return err
		})
		interrupted("query timed out", timeoutSoon, func(qctx context.Context, conn *sql.Conn) error {
			rows, err := conn.QueryContext(qctx, sleepSQL)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
			}
			return rows.Err()
		})
		// Rows are flowing when the context ends: the error comes from rows.Err.
		interrupted("rows cancelled", cancelSoon, func(qctx context.Context, conn *sql.Conn) error {
			rows, err := conn.QueryContext(qctx, `SELECT g, repeat('x', 100000), pg_sleep(CASE WHEN g = 50 THEN 5 ELSE 0 END) FROM generate_series(1, 100) g`)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
			}
			return rows.Err()
		})
		interrupted("in transaction", cancelSoon, func(qctx context.Context, conn *sql.Conn) error {
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(qctx, `INSERT INTO items (name, qty) VALUES ('cancelled', 1)`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(qctx, sleepSQL); err != nil {
				return err
			}
			return tx.Commit()
		})
		done, cancel := context.WithCancel(ctx)
		cancel()
		_, err := db.ExecContext(done, `SELECT 1`)
		tr.add("already cancelled", nil, err)

		// The pool is healthy: more queries at once than it has connections.
		var wg sync.WaitGroup
		errs := make([]error, 12)
		for i := range errs {
			wg.Go(func() {
				var n int
				errs[i] = db.QueryRowContext(ctx, `SELECT $1::int + count(*) FROM items`, i).Scan(&n)
				if errs[i] == nil && n != i+2 {
					errs[i] = fmt.Errorf("query %d: got %d", i, n)
				}
			})
		}
		wg.Wait()
		tr.add("queries after", nil, errors.Join(errs...))
		items, err := queryItems(ctx, db)
		tr.add("items after", items, err)
		return tr, nil
	}})
	for _, name := range []string{"exec cancelled", "query timed out", "rows cancelled", "in transaction"} {
		s := tr.get(t, name)
		if s.Err == nil || s.Value != true {
			t.Errorf("%s: returned promptly %v, error %+v; want a prompt error", name, s.Value, s.Err)
		}
	}
	tr.wantErr(t, "already cancelled", context.Canceled.Error())
	tr.wantOK(t, "queries after", "items after")
	if items := tr.get(t, "items after").Value.([][]any); len(items) != 2 {
		t.Errorf("the cancelled transaction left rows: %v", items)
	}
}

// TestServerGoesAwayAndComesBack stops the server under open pools: while it is down
// every call fails as it does through pgx, and once it is back the same *sql.DB
// works again.
func TestServerGoesAwayAndComesBack(t *testing.T) {
	t.Parallel()
	if os.Getenv(pgcachetest.EnvDatabaseURL) != "" {
		t.Skip("needs a server of its own to stop; PGCACHE_TEST_DATABASE_URL is set")
	}
	ctx := testContext(t)
	pg, err := pgcachetest.StartPostgres(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Terminate(context.Background()) })
	e := newEnvDSN(t, pg.URL(), itemsSetup...)

	// calls makes every kind of call once. Ping comes first: whatever idle connections
	// the pool holds, it discards the dead ones (driver.ErrBadConn) before the others
	// run, so every run of calls sees the same pool.
	calls := check[trace]{work: func(ctx context.Context, db *sql.DB) (trace, error) {
		var tr trace
		tr.add("ping", nil, db.PingContext(ctx))
		var n int
		tr.add("query", n, db.QueryRowContext(ctx, `SELECT count(*) FROM items`).Scan(&n))
		_, err := db.ExecContext(ctx, `UPDATE items SET qty = qty WHERE id = $1`, 1)
		tr.add("exec", nil, err)
		tx, err := db.BeginTx(ctx, nil)
		tr.add("begin", nil, err)
		if err == nil {
			tr.add("rollback", nil, tx.Rollback())
		}
		stmt, err := db.PrepareContext(ctx, `SELECT name FROM items WHERE id = $1`)
		tr.add("prepare", nil, err)
		if err == nil {
			tr.add("close statement", nil, stmt.Close())
		}
		conn, err := db.Conn(ctx)
		tr.add("conn", nil, err)
		if err == nil {
			tr.add("close conn", nil, conn.Close())
		}
		return tr, nil
	}}
	all := []string{"ping", "query", "exec", "begin", "prepare", "conn"}

	before, _ := compare(t, e, calls)
	before.wantOK(t, all...)

	// A transaction of each driver is open when the server goes away.
	targets := append([]target{e.ref}, e.subjects...)
	txs := make([]*sql.Tx, len(targets))
	for i, tg := range targets {
		if txs[i], err = tg.db.BeginTx(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := txs[i].ExecContext(ctx, `INSERT INTO items (name, qty) VALUES ($1, 1)`, tg.name); err != nil {
			t.Fatal(err)
		}
	}

	if err := pg.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var txErrs []trace
	for _, tx := range txs {
		var tr trace
		_, err := tx.ExecContext(ctx, `SELECT 1`)
		tr.add("exec in open transaction", nil, err)
		tr.add("commit", nil, tx.Commit())
		txErrs = append(txErrs, tr)
	}
	for i := 1; i < len(targets); i++ {
		if diff := outcomeDiff(txErrs[0], nil, txErrs[i], nil); diff != "" {
			t.Errorf("transaction across the outage: %s differs from %s (-%[2]s +%[1]s):\n%s", targets[i].name, targets[0].name, diff)
		}
	}
	if txErrs[0].get(t, "exec in open transaction").Err == nil {
		t.Error("a transaction on a stopped server went on")
	}

	down, _ := compare(t, e, calls)
	for _, name := range all {
		if down.get(t, name).Err == nil {
			t.Errorf("%s succeeded on a stopped server", name)
		}
	}

	if err := pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := compare(t, e, calls)
	after.wantOK(t, all...)
}

// TestCopyThroughRaw reaches the *pgx.Conn behind a database/sql connection for COPY
// in both directions, and goes on using the connection through database/sql.
func TestCopyThroughRaw(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tr, _ := compare(t, e, check[trace]{setup: itemsSetup, work: func(ctx context.Context, db *sql.DB) (trace, error) {
		var tr trace
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		copyIn := func(name string, rows [][]any) {
			var n int64
			err := conn.Raw(func(dc any) error {
				pc, ok := driver.PgxConn(dc)
				if !ok {
					return fmt.Errorf("no *pgx.Conn behind %T", dc)
				}
				var err error
				n, err = pc.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"name", "qty", "note"}, pgx.CopyFromRows(rows))
				return err
			})
			tr.add(name, n, err)
		}
		copyIn("copy in", [][]any{{"c1", 1, nil}, {"c2", 2, "two"}, {"c3 ☃", int64(3), "tab\there"}})
		copyIn("copy in violating a constraint", [][]any{{"c4", 4, nil}, {"c5", -5, nil}})
		copyIn("copy in a bad value", [][]any{{"c6", "six", nil}})

		var out bytes.Buffer
		err = conn.Raw(func(dc any) error {
			pc, _ := driver.PgxConn(dc)
			_, err := pc.PgConn().CopyTo(ctx, &out, `COPY (SELECT name, qty, note FROM items ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)`)
			return err
		})
		tr.add("copy out", out.String(), err)

		items, err := queryItems(ctx, conn)
		tr.add("items through database/sql", items, err)
		return tr, nil
	}})
	tr.wantOK(t, "copy in", "copy out", "items through database/sql")
	if n := tr.get(t, "copy in").Value; n != int64(3) {
		t.Errorf("copied %v rows, want 3", n)
	}
	tr.wantState(t, "copy in violating a constraint", "23514")
	if s := tr.get(t, "copy in a bad value"); s.Err == nil {
		t.Error("copying text into an int column succeeded")
	}
	if out := tr.get(t, "copy out").Value.(string); !strings.HasPrefix(out, "name,qty,note\napple,3,\n") || !strings.Contains(out, "c3 ☃,3,tab\there\n") {
		t.Errorf("copy out:\n%s", out)
	}

	// pgcache hands database/sql its own connection type, which still reaches pgx.
	conn, err := e.pgcache().Conn(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Raw(func(dc any) error {
		if _, ok := dc.(*driver.Conn); !ok {
			return fmt.Errorf("Raw gave %T, want *driver.Conn", dc)
		}
		if pc, ok := driver.PgxConn(dc); !ok || pc.IsClosed() {
			return errors.New("no open *pgx.Conn behind the pgcache connection")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// withParams adds parameters to a URL DSN.
func withParams(dsn string, params ...string) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + strings.Join(params, "&")
}

// keywordValue turns a URL DSN into the keyword/value form pgx also accepts.
func keywordValue(t *testing.T, dsn string, extra ...string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	kv := fmt.Sprintf("host=%s port=%d user=%s password='%s' dbname=%s sslmode=disable",
		cfg.Host, cfg.Port, cfg.User, strings.ReplaceAll(cfg.Password, "'", `\'`), cfg.Database)
	return strings.Join(append([]string{kv}, extra...), " ")
}

// TestDSNForms connects with both DSN forms, with and without pgcache's parameters,
// and checks that pgcache's parameters never reach the server while the others do.
func TestDSNForms(t *testing.T) {
	t.Parallel()
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	wantDB, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	forms := map[string]string{
		"url":                            withParams(dsn, "application_name=app_url"),
		"url pgcache_mode=off":           withParams(dsn, "pgcache_mode=off", "application_name=app_url"),
		"url pgcache_mode=auto":          withParams(dsn, "application_name=app_url", "pgcache_mode=auto"),
		"keyword/value":                  keywordValue(t, dsn, "application_name=app_kv"),
		"keyword/value pgcache_mode=off": keywordValue(t, dsn, "pgcache_mode=off", "application_name=app_kv"),
	}
	for name, form := range forms {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			db := openDB(t, "pgcache", form)
			var database, app string
			if err := db.QueryRowContext(ctx, `SELECT current_database(), current_setting('application_name')`).Scan(&database, &app); err != nil {
				t.Fatal(err)
			}
			wantApp := "app_url"
			if strings.HasPrefix(name, "keyword") {
				wantApp = "app_kv"
			}
			if database != wantDB.Database || app != wantApp {
				t.Errorf("connected to %s as %s, want %s as %s", database, app, wantDB.Database, wantApp)
			}
			if strings.Contains(name, "pgcache_mode") {
				// Given to pgx itself, the parameter reaches the server, which refuses it:
				// pgcache must have removed it.
				err := openDB(t, "pgx", form).PingContext(ctx)
				if err == nil || !strings.Contains(err.Error(), `unrecognized configuration parameter "pgcache_mode"`) {
					t.Errorf("pgx with pgcache_mode: %v, want the server to refuse the parameter", err)
				}
			}
		})
	}
}

// TestDSNErrors: an unknown or wrong pgcache_* parameter fails sql.Open with an
// error that names it and not the password; a DSN pgx refuses fails with pgx's error.
func TestDSNErrors(t *testing.T) {
	t.Parallel()
	dsn := withParams(pgcachetest.SharedPostgres(t).URL(), "sslmode=disable")
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, dsn, want string }{
		{"url unknown", withParams(dsn, "pgcache_bogus=1"), `pgcache: unknown DSN parameter "pgcache_bogus"`},
		{"keyword/value unknown", keywordValue(t, dsn, "pgcache_colour=blue"), `pgcache: unknown DSN parameter "pgcache_colour"`},
		{"url bad mode", withParams(dsn, "pgcache_mode=sometimes"), `pgcache: DSN parameter pgcache_mode: want auto or off, got "sometimes"`},
		{"keyword/value bad mode", keywordValue(t, dsn, "pgcache_mode=''"), `pgcache: DSN parameter pgcache_mode: want auto or off, got ""`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db, err := sql.Open("pgcache", tt.dsn)
			if err == nil {
				db.Close()
				t.Fatalf("sql.Open succeeded, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("sql.Open: %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), cfg.Password) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}

	// A DSN without pgcache parameters that pgx refuses fails as it does with pgx:
	// sql.Open succeeds and the first use reports pgx's error.
	for _, bad := range []string{"postgres://h:notaport/db", "host=h port=x", "host=h connect_timeout=soon"} {
		t.Run("pgx refuses "+bad, func(t *testing.T) {
			ctx := testContext(t)
			wantErr := openDB(t, "pgx", bad).PingContext(ctx)
			err := openDB(t, "pgcache", bad).PingContext(ctx)
			if wantErr == nil || err == nil || err.Error() != wantErr.Error() {
				t.Errorf("pgcache: %v\npgx:     %v", err, wantErr)
			}
		})
	}
}

// TestProgrammaticConfig opens the driver from a Config with pgx settings and
// stdlib hooks, as applications that configure pgx in code do.
func TestProgrammaticConfig(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	dsn := pgcachetest.SharedPostgres(t).NewDatabase(t)
	mustExec(t, openDB(t, "pgx", dsn), `CREATE SCHEMA app`, `CREATE TABLE app.things (id int)`, `INSERT INTO app.things VALUES (42)`)

	cfg, err := driver.ParseConfig(withParams(dsn, "pgcache_mode=off"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != driver.ModeOff {
		t.Errorf("Mode = %q, want off", cfg.Mode)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "programmatic"
	var connects int
	var mu sync.Mutex
	cfg.StdlibOptions = []stdlib.OptionOpenDB{stdlib.OptionAfterConnect(func(ctx context.Context, conn *pgx.Conn) error {
		mu.Lock()
		connects++
		mu.Unlock()
		_, err := conn.Exec(ctx, `SET search_path = app`)
		return err
	})}
	for _, open := range []struct {
		name string
		open func() (*sql.DB, error)
	}{
		{"OpenDB", func() (*sql.DB, error) { return driver.OpenDB(cfg) }},
		{"NewConnector", func() (*sql.DB, error) {
			c, err := driver.NewConnector(cfg)
			if err != nil {
				return nil, err
			}
			return sql.OpenDB(c), nil
		}},
	} {
		db, err := open.open()
		if err != nil {
			t.Fatalf("%s: %v", open.name, err)
		}
		var id int
		var app string
		if err := db.QueryRowContext(ctx, `SELECT id, current_setting('application_name') FROM things`).Scan(&id, &app); err != nil {
			t.Errorf("%s: %v", open.name, err)
		} else if id != 42 || app != "programmatic" {
			t.Errorf("%s: got %d as %q", open.name, id, app)
		}
		if err := db.Close(); err != nil {
			t.Errorf("%s: Close: %v", open.name, err)
		}
	}
	if connects != 2 {
		t.Errorf("AfterConnect ran %d times, want 2", connects)
	}
}

// TestDSNRegisteredConnConfig opens the name that stdlib.RegisterConnConfig returns,
// which pgx documents as a DSN for sql.Open("pgx", name): a drop-in replacement
// must accept it too.
func TestDSNRegisteredConnConfig(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	cfg, err := pgx.ParseConfig(pgcachetest.SharedPostgres(t).NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "registered"
	name := stdlib.RegisterConnConfig(cfg)
	defer stdlib.UnregisterConnConfig(name)
	for _, driverName := range []string{"pgx", "pgcache"} {
		db, err := sql.Open(driverName, name)
		if err != nil {
			t.Errorf("%s: sql.Open(%q): %v", driverName, name, err)
			continue
		}
		var app string
		if err := db.QueryRowContext(ctx, `SELECT current_setting('application_name')`).Scan(&app); err != nil || app != "registered" {
			t.Errorf("%s: application_name %q, %v; want the registered config's", driverName, app, err)
		}
		db.Close()
	}
}
