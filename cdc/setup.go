package cdc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors that say what to change on the server. The errors the listener
// returns wrap them with the details; test with errors.Is.
var (
	ErrWALLevel             = errors.New("cdc: wal_level is not logical")
	ErrReplicationPrivilege = errors.New("cdc: the role lacks the REPLICATION attribute")
	ErrPublicationMissing   = errors.New("cdc: the publication does not exist")
	ErrSlotInUse            = errors.New("cdc: the replication slot is in use")
)

// permanentError marks an error that reconnecting cannot fix: the listener
// stops (state Failed) and Run returns it.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

// IsPermanent reports whether err is one that made Run stop instead of
// reconnecting: a configuration that must be changed first.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// minServerVersion is PostgreSQL 14, the first with pgoutput protocol 2
// (streaming of large transactions) and logical decoding messages in pgoutput.
const minServerVersion = 140000

// connect opens a replication connection (replication=database).
func (l *Listener) connect(ctx context.Context) (*pgconn.PgConn, error) {
	conn, err := pgconn.ConnectConfig(ctx, l.pgcfg.Copy())
	if err == nil {
		return conn, nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42501": // insufficient_privilege: "must be superuser or replication role to start walsender"
			return nil, permanent(fmt.Errorf("%w: role %q: %s; grant it with ALTER ROLE %s REPLICATION",
				ErrReplicationPrivilege, l.pgcfg.User, pgErr.Message, quoteIdent(l.pgcfg.User)))
		case "28000", "28P01": // invalid_authorization_specification, invalid_password
			return nil, permanent(fmt.Errorf("cdc: connect as %q: %w (check the password, and that pg_hba.conf admits this role to the database)", l.pgcfg.User, err))
		case "3D000": // invalid_catalog_name
			return nil, permanent(fmt.Errorf("cdc: connect: %w", err))
		}
	}
	return nil, fmt.Errorf("cdc: connect: %w", err)
}

// queryRows runs one SQL statement over the simple protocol (the only one a
// replication connection speaks) and returns the rows of its result; a NULL
// column is nil.
func queryRows(ctx context.Context, conn *pgconn.PgConn, sql string) ([][][]byte, error) {
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(res) == 0 {
		return nil, nil
	}
	return res[len(res)-1].Rows, nil
}

// checkServer verifies what the listener needs of the server, with messages
// that say what to change.
func (l *Listener) checkServer(ctx context.Context, conn *pgconn.PgConn) error {
	rows, err := queryRows(ctx, conn, "SELECT current_setting('wal_level'), current_setting('server_version_num'), current_database()")
	if err != nil {
		return fmt.Errorf("cdc: read server settings: %w", err)
	}
	if len(rows) != 1 || len(rows[0]) != 3 {
		return errors.New("cdc: read server settings: unexpected result")
	}
	walLevel, database := string(rows[0][0]), string(rows[0][2])
	version, _ := strconv.Atoi(string(rows[0][1]))
	if walLevel != "logical" {
		return permanent(fmt.Errorf("%w: wal_level is %q; set it to logical (ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL", ErrWALLevel, walLevel))
	}
	if version < minServerVersion {
		return permanent(fmt.Errorf("cdc: PostgreSQL server version %d: streaming of large transactions (pgoutput protocol 2) needs 14 or later", version))
	}
	l.database = database
	return nil
}

// ensurePublication verifies the publication, creating it or adding missing
// tables to it when Config.CreatePublication allows.
func (l *Listener) ensurePublication(ctx context.Context, conn *pgconn.PgConn) error {
	pub := l.cfg.Publication
	query := "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, puballtables FROM pg_publication WHERE pubname = " + quoteLiteral(pub)
	rows, err := queryRows(ctx, conn, query)
	if err != nil {
		return fmt.Errorf("cdc: read publication %s: %w", pub, err)
	}
	if len(rows) == 0 {
		if err := l.createPublication(ctx, conn); err != nil {
			return err
		}
		if rows, err = queryRows(ctx, conn, query); err != nil {
			return fmt.Errorf("cdc: read publication %s: %w", pub, err)
		}
		if len(rows) == 0 {
			return fmt.Errorf("cdc: publication %s was dropped as it was created", pub)
		}
	}
	var missing []string
	for i, op := range []string{"insert", "update", "delete", "truncate"} {
		if string(rows[0][i]) != "t" {
			missing = append(missing, op)
		}
	}
	if len(missing) > 0 {
		return permanent(fmt.Errorf("cdc: publication %s does not publish %s, whose changes would be missed; ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate')",
			pub, strings.Join(missing, ", "), quoteIdent(pub)))
	}
	allTables := string(rows[0][4]) == "t"
	for _, t := range l.cfg.Tables {
		ident, _ := tableIdentifier(t) // validated by NewListener
		rel := "to_regclass(" + quoteLiteral(ident) + ")"
		// A partitioned table is covered when it, a partition or an ancestor is
		// listed: which one pg_publication_tables shows depends on
		// publish_via_partition_root.
		rows, err := queryRows(ctx, conn, "SELECT "+rel+" IS NOT NULL, EXISTS (SELECT 1 FROM pg_publication_tables pt WHERE pt.pubname = "+quoteLiteral(pub)+
			" AND format('%I.%I', pt.schemaname, pt.tablename)::regclass IN (SELECT "+rel+" UNION SELECT relid FROM pg_partition_tree("+rel+") UNION SELECT relid FROM pg_partition_ancestors("+rel+")))")
		if err != nil {
			return fmt.Errorf("cdc: check table %s in publication %s: %w", t, pub, err)
		}
		if string(rows[0][0]) != "t" {
			return permanent(fmt.Errorf("cdc: Config.Tables: table %s does not exist", t))
		}
		if allTables || string(rows[0][1]) == "t" {
			continue
		}
		if !l.cfg.CreatePublication {
			return permanent(fmt.Errorf("cdc: table %s is not in publication %s; ALTER PUBLICATION %s ADD TABLE %s, or set Config.CreatePublication", t, pub, quoteIdent(pub), ident))
		}
		if _, err := queryRows(ctx, conn, "ALTER PUBLICATION "+quoteIdent(pub)+" ADD TABLE "+ident); err != nil {
			return fmt.Errorf("cdc: add table %s to publication %s: %w", t, pub, err)
		}
		l.log.Info("cdc: added table to publication", "publication", pub, "table", t)
	}
	return nil
}

func (l *Listener) createPublication(ctx context.Context, conn *pgconn.PgConn) error {
	pub := l.cfg.Publication
	what := "FOR ALL TABLES"
	if len(l.cfg.Tables) > 0 {
		idents := make([]string, len(l.cfg.Tables))
		for i, t := range l.cfg.Tables {
			idents[i], _ = tableIdentifier(t)
		}
		what = "FOR TABLE " + strings.Join(idents, ", ")
	}
	if !l.cfg.CreatePublication {
		return permanent(fmt.Errorf("%w: publication %s; create it (CREATE PUBLICATION %s %s) or set Config.CreatePublication",
			ErrPublicationMissing, pub, quoteIdent(pub), what))
	}
	_, err := queryRows(ctx, conn, "CREATE PUBLICATION "+quoteIdent(pub)+" "+what)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		l.log.Info("cdc: created publication", "publication", pub, "tables", what)
		return nil
	case errors.As(err, &pgErr) && pgErr.Code == "42710": // duplicate_object: created meanwhile
		return nil
	case errors.As(err, &pgErr) && pgErr.Code == "42501" && len(l.cfg.Tables) == 0:
		return permanent(fmt.Errorf("cdc: create publication %s FOR ALL TABLES: %w; that needs a superuser: create it as one, or list Config.Tables", pub, err))
	case errors.As(err, &pgErr) && (pgErr.Code == "42501" || pgErr.Code == "42P01"):
		return permanent(fmt.Errorf("cdc: create publication %s %s: %w", pub, what, err))
	}
	return fmt.Errorf("cdc: create publication %s: %w", pub, err)
}

// slotStart is where streaming starts, and whether history was lost before it.
type slotStart struct {
	lsn         LSN    // the slot's confirmed position, or its consistent point when created
	historyLost string // why, when the consumer must treat everything as changed
}

// ensureSlot verifies the slot, or creates it.
func (l *Listener) ensureSlot(ctx context.Context, conn *pgconn.PgConn) (slotStart, error) {
	slot := l.cfg.Slot
	if l.cfg.Temporary {
		lsn, err := l.createSlot(ctx, conn)
		if err != nil {
			return slotStart{}, err
		}
		return slotStart{lsn, fmt.Sprintf("temporary replication slot %s created: changes before it are unknown", slot)}, nil
	}
	rows, err := queryRows(ctx, conn, "SELECT plugin, slot_type, database, active_pid, wal_status, confirmed_flush_lsn, temporary FROM pg_replication_slots WHERE slot_name = "+quoteLiteral(slot))
	if err != nil {
		return slotStart{}, fmt.Errorf("cdc: read replication slot %s: %w", slot, err)
	}
	if len(rows) == 0 {
		reason := fmt.Sprintf("replication slot %s created: changes before it are unknown", slot)
		if l.slotSeen {
			reason = fmt.Sprintf("replication slot %s was dropped; created it again", slot)
		}
		lsn, err := l.createSlot(ctx, conn)
		return slotStart{lsn, reason}, err
	}
	row := rows[0]
	plugin, slotType, database := string(row[0]), string(row[1]), string(row[2])
	if slotType != "logical" || plugin != "pgoutput" || database != l.database {
		return slotStart{}, permanent(fmt.Errorf("cdc: replication slot %s is a %s slot of plugin %q on database %q, not a pgoutput slot on %q: drop it (SELECT pg_drop_replication_slot('%s')) or set another Config.Slot",
			slot, slotType, plugin, database, l.database, slot))
	}
	if row[3] != nil {
		return slotStart{}, fmt.Errorf("%w: replication slot %s is active for PID %s: only one listener may read a slot (another is running, or one that was cut off has not exited yet)",
			ErrSlotInUse, slot, row[3])
	}
	if string(row[6]) == "t" {
		return slotStart{}, fmt.Errorf("%w: replication slot %s is another session's temporary slot", ErrSlotInUse, slot)
	}
	if string(row[4]) == "lost" {
		l.log.Warn("cdc: replication slot lost its WAL; dropping and creating it again", "slot", slot)
		if err := pglogrepl.DropReplicationSlot(ctx, conn, quoteIdent(slot), pglogrepl.DropReplicationSlotOptions{}); err != nil {
			return slotStart{}, fmt.Errorf("cdc: drop lost replication slot %s: %w", slot, err)
		}
		lsn, err := l.createSlot(ctx, conn)
		return slotStart{lsn, fmt.Sprintf("replication slot %s lost WAL it needed (wal_status = lost, see max_slot_wal_keep_size); created it again", slot)}, err
	}
	confirmed, err := ParseLSN(string(row[5]))
	if err != nil {
		return slotStart{}, fmt.Errorf("cdc: replication slot %s: confirmed_flush_lsn: %w", slot, err)
	}
	applied := LSN(l.applied.Load())
	start := slotStart{lsn: max(confirmed, applied)}
	// Only this listener acknowledges, so the slot cannot be ahead of what it
	// applied, unless it was dropped and created again, or advanced, by someone
	// else between two connections: the changes in between are unknown.
	if l.slotSeen && confirmed > applied {
		start.historyLost = fmt.Sprintf("replication slot %s moved from the acknowledged position %s to %s (recreated or advanced by someone else)", slot, applied, confirmed)
	}
	return start, nil
}

// createSlot creates the slot and returns its consistent point, from which
// every commit will be streamed.
func (l *Listener) createSlot(ctx context.Context, conn *pgconn.PgConn) (LSN, error) {
	res, err := pglogrepl.CreateReplicationSlot(ctx, conn, quoteIdent(l.cfg.Slot), "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Temporary:      l.cfg.Temporary,
		SnapshotAction: "NOEXPORT_SNAPSHOT",
		Mode:           pglogrepl.LogicalReplication,
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object
			return 0, fmt.Errorf("%w: create replication slot %s: %s", ErrSlotInUse, l.cfg.Slot, pgErr.Message)
		}
		return 0, fmt.Errorf("cdc: create replication slot %s: %w", l.cfg.Slot, err)
	}
	l.log.Info("cdc: created replication slot", "slot", l.cfg.Slot, "temporary", l.cfg.Temporary, "consistent_point", res.ConsistentPoint)
	return ParseLSN(res.ConsistentPoint)
}

// startReplication starts streaming from start.
func (l *Listener) startReplication(ctx context.Context, conn *pgconn.PgConn, start LSN) error {
	err := pglogrepl.StartReplication(ctx, conn, quoteIdent(l.cfg.Slot), pglogrepl.LSN(start), pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{
			"proto_version '2'",
			// A list of identifiers: the validated name, double-quoted.
			`publication_names '"` + l.cfg.Publication + `"'`,
			"messages 'true'",
			"streaming 'on'",
		},
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55006" { // object_in_use
			return fmt.Errorf("%w: %s", ErrSlotInUse, pgErr.Message)
		}
		return fmt.Errorf("cdc: start replication from slot %s at %s: %w", l.cfg.Slot, start, err)
	}
	return nil
}
