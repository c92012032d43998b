package cdc

import (
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	cfg := Config{ConnString: "postgres://u:secret@localhost/db"}
	pgcfg, err := cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Publication != DefaultPublication || cfg.Slot != DefaultSlot || cfg.StatusInterval != DefaultStatusInterval ||
		cfg.Backoff != (Backoff{DefaultBackoffMin, DefaultBackoffMax}) || cfg.MaxTransactionBytes != DefaultMaxTransactionBytes || cfg.Logger == nil {
		t.Errorf("defaults not filled: %+v", cfg)
	}
	if pgcfg.RuntimeParams["replication"] != "database" || pgcfg.RuntimeParams["application_name"] != "pgcache-cdc" {
		t.Errorf("runtime params %v", pgcfg.RuntimeParams)
	}
}

func TestConfigRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		says string
	}{
		{"no conn string", Config{}, "ConnString is empty"},
		{"bad conn string", Config{ConnString: "postgres://u:secret@host:notaport/db"}, "ConnString"},
		{"upper-case slot", Config{ConnString: "host=x", Slot: "Slot"}, "Config.Slot"},
		{"quote in slot", Config{ConnString: "host=x", Slot: `a"b`}, "Config.Slot"},
		{"long publication", Config{ConnString: "host=x", Publication: strings.Repeat("p", 64)}, "Config.Publication"},
		{"three-part table", Config{ConnString: "host=x", Tables: []string{"a.b.c"}}, "Config.Tables"},
		{"empty table", Config{ConnString: "host=x", Tables: []string{"public."}}, "Config.Tables"},
		{"negative interval", Config{ConnString: "host=x", StatusInterval: -time.Second}, "StatusInterval"},
		{"backoff min above max", Config{ConnString: "host=x", Backoff: Backoff{Min: time.Minute, Max: time.Second}}, "Backoff"},
		{"negative bytes", Config{ConnString: "host=x", MaxTransactionBytes: -1}, "MaxTransactionBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.validate()
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want one that says %q", err, tc.says)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the password shows in %v", err)
			}
		})
	}
	if _, err := NewListener(Config{ConnString: "host=x"}, nil); err == nil {
		t.Error("NewListener accepted a nil consumer")
	}
}

func TestQuoting(t *testing.T) {
	for in, want := range map[string]string{"t": `"t"`, "s.t": `"s"."t"`, `we"ird.Ta ble`: `"we""ird"."Ta ble"`} {
		if got, err := tableIdentifier(in); err != nil || got != want {
			t.Errorf("tableIdentifier(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	if got := quoteLiteral(`it's \ here`); got != `E'it''s \\ here'` {
		t.Errorf("quoteLiteral = %s", got)
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for n, want := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		want *= time.Millisecond
		if got := b.delay(n, 0); got != want {
			t.Errorf("delay(%d) without jitter = %v, want %v", n, got, want)
		}
		if got := b.delay(n, 0.999); got <= want/2 || got > want {
			t.Errorf("delay(%d) with most jitter = %v, want in (%v, %v]", n, got, want/2, want)
		}
	}
	if got := b.delay(1000, 0); got != time.Second {
		t.Errorf("delay after many failures = %v, want the cap", got)
	}
}

func TestSlotFor(t *testing.T) {
	for db, want := range map[string]string{
		"app":      "pgcache_app",
		"t_3f2a9c": "pgcache_t_3f2a9c",
	} {
		if got := SlotFor(db); got != want {
			t.Errorf("SlotFor(%q) = %q, want %q", db, got, want)
		}
	}
	seen := map[string]string{}
	for _, db := range []string{"App", "app-1", "app 1", "Ünïcode", strings.Repeat("x", 80), strings.Repeat("x", 81)} {
		got := SlotFor(db)
		if len(got) > 63 || strings.Trim(got, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("SlotFor(%q) = %q: not a valid slot name", db, got)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("SlotFor(%q) = SlotFor(%q) = %q", db, other, got)
		}
		seen[got] = db
	}
}
