package driver

import (
	"context"
	"database/sql"
	sqldriver "database/sql/driver"
	"time"
)

// DriverName is the name pgcache registers with database/sql.
const DriverName = "pgcache"

func init() {
	sql.Register(DriverName, &Driver{})
}

// Driver is pgcache's database/sql driver, registered as "pgcache". Every DSN that
// sql.Open("pgx", dsn) accepts works, plus pgcache's own pgcache_* parameters.
type Driver struct{}

var (
	_ sqldriver.Driver        = (*Driver)(nil)
	_ sqldriver.DriverContext = (*Driver)(nil)
)

// Open opens one connection. database/sql uses OpenConnector instead; Open exists
// for callers that use the driver directly.
func (d *Driver) Open(dsn string) (sqldriver.Conn, error) {
	c, err := d.OpenConnector(dsn)
	if err != nil {
		return nil, err
	}
	// As pgx's driver: bound the otherwise context-free connect.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.Connect(ctx)
}

// OpenConnector returns a connector for the DSN; sql.Open calls it once per *sql.DB.
// A wrong pgcache_* parameter fails at once. A DSN without pgcache parameters that
// pgx cannot parse here is handed to pgx's connector unparsed, exactly as
// sql.Open("pgx", dsn) would: pgx then resolves it when connecting (the names
// stdlib.RegisterConnConfig returns are such DSNs) or reports its own error there.
func (d *Driver) OpenConnector(dsn string) (sqldriver.Connector, error) {
	cfg, err := ParseConfig(dsn)
	if err != nil {
		if rest, opts, splitErr := splitDSN(dsn); splitErr == nil && len(opts) == 0 {
			return newConnector(d, &Config{dsn: rest})
		}
		return nil, err
	}
	return newConnector(d, cfg)
}
