package driver

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgcache/pgcache/cdc"
	"github.com/pgcache/pgcache/querycache"
)

// session is what a connection knows about its server session: the identity that
// keys its cache entries, and whether that knowledge is still current.
type session struct {
	id querycache.Identity
	// current: id.Role and id.SearchPath are known to be the session's. Any
	// statement that is not a cacheable SELECT may change them (SET ROLE,
	// SET search_path, set_config(), a procedure...), so it clears current and
	// the next cached read asks the server again.
	current bool
	// server is set once per connection: it cannot change.
	server string
	// temp: the session created temporary objects, which may shadow the relations
	// a statement names; nothing is cached on it any more.
	temp bool

	// settings caches id.Settings from the server-reported parameters it is
	// built from, so it is rebuilt only when one of them changes.
	timeZone, dateStyle, intervalStyle string

	// plans remembers the cacheable plans of this session's identity by
	// statement text: a repeated statement skips the analyzer's shared cache
	// (whose key hashes the text and the whole identity). Cleared whenever the
	// identity may have changed; bounded by maxSessionPlans.
	plans map[string]*querycache.Plan
}

// maxSessionPlans bounds the plans a session remembers; past it the oldest
// knowledge is dropped wholesale (the analyzer still has them).
const maxSessionPlans = 256

// plan returns a remembered plan for sql, if it is still fresh.
func (s *session) plan(a *querycache.Analyzer, sql string) *querycache.Plan {
	p := s.plans[sql]
	if p != nil && !a.Fresh(p) {
		delete(s.plans, sql)
		return nil
	}
	return p
}

// remember keeps a cacheable plan for the session's current identity.
func (s *session) remember(sql string, p *querycache.Plan) {
	if s.plans == nil || len(s.plans) >= maxSessionPlans {
		s.plans = make(map[string]*querycache.Plan)
	}
	s.plans[sql] = p
}

// refreshSettings updates id.Settings from the parameters the server reports on
// every change (ParameterStatus): no round trip.
func (s *session) refreshSettings(conn *pgx.Conn) {
	pc := conn.PgConn()
	tz, ds, is := pc.ParameterStatus("TimeZone"), pc.ParameterStatus("DateStyle"), pc.ParameterStatus("IntervalStyle")
	if tz == s.timeZone && ds == s.dateStyle && is == s.intervalStyle && s.id.Settings != "" {
		return
	}
	s.plans = nil // the identity changed
	s.timeZone, s.dateStyle, s.intervalStyle = tz, ds, is
	s.id.Settings = "TimeZone=" + tz + "\x00DateStyle=" + ds + "\x00IntervalStyle=" + is
}

// sessionQuery reads, in one round trip, the parts of the identity that statements
// can change and the current WAL insert position (the read-your-writes fence of the
// writes that completed before it). The system identifier names the server where
// the role may read it (pg_control_system needs pg_monitor or superuser).
const sessionQuery = `SELECT current_user, current_database(), current_setting('search_path'),
	pg_current_wal_insert_lsn()::text,
	CASE WHEN $1 AND has_function_privilege('pg_control_system()', 'EXECUTE')
	     THEN (SELECT system_identifier::text FROM pg_control_system()) END`

// load refreshes the session's identity and returns the current WAL insert LSN.
func (s *session) load(ctx context.Context, conn *pgx.Conn) (querycache.LSN, error) {
	var role, db, searchPath, lsnText string
	var sysID *string
	if err := conn.QueryRow(ctx, sessionQuery, s.server == "").Scan(&role, &db, &searchPath, &lsnText, &sysID); err != nil {
		return 0, fmt.Errorf("pgcache: read session identity: %w", err)
	}
	lsn, err := cdc.ParseLSN(lsnText)
	if err != nil {
		return 0, err
	}
	if s.server == "" {
		if sysID != nil {
			s.server = "sysid:" + *sysID
		} else {
			// Without the system identifier, the address this connection reached.
			s.server = "addr:" + conn.PgConn().Conn().RemoteAddr().String()
		}
	}
	if s.id.Database != db || s.id.Role != role || s.id.SearchPath != searchPath {
		s.plans = nil // plans are per identity
	}
	s.id.Server, s.id.Database, s.id.Role, s.id.SearchPath = s.server, db, role, searchPath
	s.refreshSettings(conn)
	s.current = true
	return querycache.LSN(lsn), nil
}
