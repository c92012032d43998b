package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/querycache"
)

func init() {
	register("explain", command{
		summary: "explain how a statement would be cached",
		run:     runExplain,
	})
}

// runExplain prints the Plan of a statement in words. With --dsn the statement is
// resolved against that database's catalog, as the driver would; without, only what
// the text says is checked, and the output lists what was not.
func runExplain(ctx context.Context, stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dsn := fs.String("dsn", "", "PostgreSQL connection string to resolve names with (default: catalog-free analysis)")
	timeout := fs.Duration("timeout", 10*time.Second, "time limit for connecting and catalog queries")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: pgcache explain [--dsn URL] "SQL"`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return &usageError{msg: "want exactly one statement (quote it)"}
	}
	sql := fs.Arg(0)
	a, err := querycache.NewAnalyzer(querycache.AnalyzerConfig{})
	if err != nil {
		return err
	}
	if *dsn == "" {
		fmt.Fprint(stdout, a.Offline(sql).Explain())
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, *dsn)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	sess := &querycache.Session{Conn: conn}
	id := &sess.Identity
	err = conn.QueryRow(ctx, `SELECT current_database(), current_user, current_setting('search_path')`).
		Scan(&id.Database, &id.Role, &id.SearchPath)
	if err != nil {
		return fmt.Errorf("read the session identity: %w", err)
	}
	// The system identifier names the server best; reading it may need privileges
	// the role lacks, and then host:port has to do.
	id.Server = fmt.Sprintf("%s:%d", conn.Config().Host, conn.Config().Port)
	var sysid string
	if conn.QueryRow(ctx, "SELECT system_identifier::text FROM pg_control_system()").Scan(&sysid) == nil {
		id.Server = sysid
	}
	pc := conn.PgConn()
	id.Settings = pc.ParameterStatus("TimeZone") + "|" + pc.ParameterStatus("DateStyle") + "|" + pc.ParameterStatus("IntervalStyle")
	p, err := a.Plan(ctx, sess, sql)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "database %s as %s, search_path %s\n", id.Database, id.Role, id.SearchPath)
	fmt.Fprint(stdout, p.Explain())
	return nil
}
