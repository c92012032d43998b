package pgcachetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	osexec "os/exec"

	"github.com/testcontainers/testcontainers-go/exec"
)

// Psql runs SQL with the psql client against the database dsn names, as an
// application outside Go would: inside the server's container (psql comes with
// every postgres image), or with the host's psql for an external server. It
// returns psql's output, and an error with that output when psql fails.
func (p *Postgres) Psql(ctx context.Context, dsn, sql string) (string, error) {
	// Inside the container the server listens on its own port 5432; only the
	// database name travels, the official images trust local connections.
	database := ""
	if u, err := url.Parse(dsn); err == nil && len(u.Path) > 1 {
		database = u.Path[1:]
	}
	args := []string{"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql}
	if p.container == nil {
		return runHostPsql(ctx, dsn, args)
	}
	if database == "" {
		return "", fmt.Errorf("pgcachetest: psql needs a URL DSN naming the database, got %q", dsn)
	}
	args = append(args, "-U", "postgres", "-d", database)
	code, out, err := p.container.Exec(ctx, args, exec.Multiplexed())
	if err != nil {
		return "", fmt.Errorf("pgcachetest: psql: %w", err)
	}
	text, err := io.ReadAll(out)
	if err != nil {
		return "", fmt.Errorf("pgcachetest: psql output: %w", err)
	}
	if code != 0 {
		return string(text), fmt.Errorf("pgcachetest: psql exited with %d: %s", code, bytes.TrimSpace(text))
	}
	return string(text), nil
}

func runHostPsql(ctx context.Context, dsn string, args []string) (string, error) {
	cmd := osexec.CommandContext(ctx, args[0], append(args[1:], "-d", dsn)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pgcachetest: psql: %w: %s", err, bytes.TrimSpace(out))
	}
	return string(out), nil
}
