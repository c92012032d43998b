package driver

import (
	"maps"
	"strings"
	"testing"
)

func TestSplitDSN(t *testing.T) {
	tests := []struct {
		name, dsn, rest string
		opts            map[string]string
	}{
		{"url without query", "postgres://u:p@h:5432/db", "postgres://u:p@h:5432/db", nil},
		{"url without pgcache", "postgres://h/db?sslmode=disable&application_name=x",
			"postgres://h/db?sslmode=disable&application_name=x", nil},
		{"url only pgcache", "postgresql://h/db?pgcache_mode=off", "postgresql://h/db", map[string]string{"pgcache_mode": "off"}},
		{"url mixed keeps order and escapes", "postgres://h1:1,h2:2/db?sslmode=disable&pgcache_mode=off&options=-c%20search_path%3Dx",
			"postgres://h1:1,h2:2/db?sslmode=disable&options=-c%20search_path%3Dx", map[string]string{"pgcache_mode": "off"}},
		{"url escaped key and value", "postgres://h/db?pgcache%5Fmode=of%66", "postgres://h/db", map[string]string{"pgcache_mode": "off"}},
		{"url fragment", "postgres://h/db?pgcache_mode=off#frag", "postgres://h/db#frag", map[string]string{"pgcache_mode": "off"}},
		{"kv without pgcache", "host=h dbname=db", "host=h dbname=db", nil},
		{"kv", "host=h pgcache_mode=off dbname=db", "host=h dbname=db", map[string]string{"pgcache_mode": "off"}},
		{"kv first", "pgcache_mode=off host=h", "host=h", map[string]string{"pgcache_mode": "off"}},
		{"kv spaces around =", "host = h   pgcache_mode =  off\tdbname= db", "host = h\tdbname= db", map[string]string{"pgcache_mode": "off"}},
		{"kv quoted", `password='a b\'c' pgcache_mode='o f\\f' user=u`, `password='a b\'c' user=u`, map[string]string{"pgcache_mode": `o f\f`}},
		{"kv value containing pgcache_", "application_name=pgcache_app", "application_name=pgcache_app", nil},
		{"kv escaped unquoted", `pgcache_mode=a\ b host=h`, "host=h", map[string]string{"pgcache_mode": "a b"}},
		// As in libpq, white space after "=" is skipped: the value is "host=h".
		{"kv space after =", "pgcache_mode= host=h", "", map[string]string{"pgcache_mode": "host=h"}},
		{"kv empty quoted value", "pgcache_mode='' host=h", "host=h", map[string]string{"pgcache_mode": ""}},
		{"kv malformed left to pgx", "host=h pgcache_mode", "host=h pgcache_mode", nil},
		{"kv unterminated quote left to pgx", "pgcache_mode='off host=h", "pgcache_mode='off host=h", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rest, opts, err := splitDSN(tt.dsn)
			if err != nil {
				t.Fatal(err)
			}
			if rest != tt.rest {
				t.Errorf("rest = %q, want %q", rest, tt.rest)
			}
			if !maps.Equal(opts, tt.opts) {
				t.Errorf("options = %v, want %v", opts, tt.opts)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig("postgres://u:secret@h:5433/db?sslmode=disable&pgcache_mode=off&application_name=app")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != ModeOff {
		t.Errorf("Mode = %q", cfg.Mode)
	}
	if cfg.ConnConfig.Host != "h" || cfg.ConnConfig.Port != 5433 || cfg.ConnConfig.Database != "db" {
		t.Errorf("ConnConfig = %s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["pgcache_mode"]; ok {
		t.Error("pgcache_mode reached pgx as a run-time parameter")
	}
	if got := cfg.ConnConfig.RuntimeParams["application_name"]; got != "app" {
		t.Errorf("application_name = %q", got)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"postgres://u:secret@h/db?pgcache_bogus=1", `unknown DSN parameter "pgcache_bogus"`},
		{"host=h pgcache_bogus=1", `unknown DSN parameter "pgcache_bogus"`},
		{"postgres://h/db?pgcache_mode=sometimes", `pgcache_mode: want auto or off, got "sometimes"`},
		{"postgres://h/db?pgcache_mode=%zz", "invalid URL escape"},
	}
	for _, tt := range tests {
		_, err := ParseConfig(tt.dsn)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseConfig(%q) = %v, want error containing %q", tt.dsn, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	if _, err := NewConnector(&Config{}); err == nil || !strings.Contains(err.Error(), "ConnConfig is required") {
		t.Errorf("NewConnector without ConnConfig: %v", err)
	}
	cfg, err := ParseConfig("host=h")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Mode = "never"
	if _, err := NewConnector(cfg); err == nil || !strings.Contains(err.Error(), `Config.Mode "never"`) {
		t.Errorf("NewConnector with a bad mode: %v", err)
	}
	cfg.Mode = ""
	c, err := NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.Mode != ModeAuto || c.cfg.Logger == nil {
		t.Errorf("defaults not applied: mode %q logger %v", c.cfg.Mode, c.cfg.Logger)
	}
}
