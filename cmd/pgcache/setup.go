package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/invalidate"
)

func init() {
	register("setup", command{
		summary: "check a database for pgcache and set up what is missing",
		run:     runSetup,
	})
}

// runSetup checks what pgcache needs from a database and, unless --check, sets up
// what is missing and allowed: the publication and the DDL event trigger.
func runSetup(ctx context.Context, stdout io.Writer, args []string) error {
	fs := flag.NewFlagSet("setup", flag.ContinueOnError)
	fs.SetOutput(stdout)
	dsn := fs.String("dsn", "", "PostgreSQL connection string (a superuser to create what is missing)")
	publication := fs.String("publication", cdc.DefaultPublication, "publication name")
	check := fs.Bool("check", false, "only report, change nothing")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: pgcache setup --dsn URL [--publication NAME] [--check]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dsn == "" || fs.NArg() > 0 {
		return &usageError{msg: "--dsn is required, and nothing else"}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, *dsn)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())

	var walLevel, slots, senders, role string
	var super, repl bool
	if err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('max_replication_slots'),
		current_setting('max_wal_senders'), current_user, rolsuper, rolreplication
		FROM pg_roles WHERE rolname = current_user`).Scan(&walLevel, &slots, &senders, &role, &super, &repl); err != nil {
		return err
	}
	problems := 0
	report := func(ok bool, what, fix string) {
		mark := "ok  "
		if !ok {
			mark = "FIX "
			problems++
		}
		fmt.Fprintf(stdout, "%s %s\n", mark, what)
		if !ok && fix != "" {
			fmt.Fprintf(stdout, "     %s\n", fix)
		}
	}
	report(walLevel == "logical", "wal_level = "+walLevel,
		"ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL")
	report(slots != "0" && senders != "0", fmt.Sprintf("max_replication_slots = %s, max_wal_senders = %s", slots, senders),
		"each pgcache process without Redis uses one slot and one sender; raise both")
	report(super || repl, fmt.Sprintf("role %s may replicate (superuser %v, replication %v)", role, super, repl),
		fmt.Sprintf("ALTER ROLE %s REPLICATION", pgx.Identifier{role}.Sanitize()))

	var pubExists, allTables bool
	if err := conn.QueryRow(ctx, `SELECT count(*) > 0, coalesce(bool_or(puballtables), false) FROM pg_publication WHERE pubname = $1`,
		*publication).Scan(&pubExists, &allTables); err != nil {
		return err
	}
	pubName := pgx.Identifier{*publication}.Sanitize()
	switch {
	case pubExists:
		what := "publication " + *publication + " exists"
		if allTables {
			what += " (FOR ALL TABLES)"
		} else {
			what += " (only the tables it lists are cached)"
		}
		report(true, what, "")
	case !*check && super:
		if _, err := conn.Exec(ctx, "CREATE PUBLICATION "+pubName+" FOR ALL TABLES"); err != nil {
			return fmt.Errorf("create publication: %w", err)
		}
		report(true, "created publication "+*publication+" FOR ALL TABLES", "")
	default:
		report(false, "publication "+*publication+" is missing",
			"CREATE PUBLICATION "+pubName+" FOR ALL TABLES (as a superuser), or FOR TABLE the tables to cache")
	}

	var triggers int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_event_trigger WHERE evtname IN ('pgcache_ddl', 'pgcache_drop') AND evtenabled <> 'D'`).Scan(&triggers); err != nil {
		return err
	}
	switch {
	case triggers == 2:
		report(true, "DDL event triggers installed: schema changes flush caches at once", "")
	case !*check && super:
		if _, err := conn.Exec(ctx, invalidate.DDLTriggerSQL); err != nil {
			return fmt.Errorf("install the DDL event triggers: %w", err)
		}
		report(true, "installed the DDL event triggers: schema changes flush caches at once", "")
	default:
		report(false, "DDL event triggers missing: a schema change reaches caches only with the next row change or the TTL",
			"run pgcache setup as a superuser to install them")
	}
	if problems > 0 {
		return fmt.Errorf("%d thing(s) to fix", problems)
	}
	return nil
}
