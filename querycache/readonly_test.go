package querycache_test

import (
	"testing"

	"github.com/pgcache/pgcache/querycache"
)

func TestMayWrite(t *testing.T) {
	a, err := querycache.NewAnalyzer(querycache.AnalyzerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for sql, want := range map[string]bool{
		"SELECT * FROM t WHERE id = $1":                         false,
		"SELECT a.x FROM a JOIN b ON a.id = b.a_id":             false,
		"SELECT count(*) FROM t":                                true, // a function by name: it may write, for all the text says
		"SELECT create_order($1)":                               true,
		"INSERT INTO t VALUES (1)":                              true,
		"UPDATE t SET x = 1":                                    true,
		"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d": true,
		"SET search_path = x":                                   true,
		"SELEC oops":                                            false, // PostgreSQL rejects it
		"":                                                      false,
		"SELECT 1; DELETE FROM t":                               true,
	} {
		if got := a.MayWrite(sql); got != want {
			t.Errorf("MayWrite(%q) = %v, want %v", sql, got, want)
		}
	}
}

func TestSetsOnly(t *testing.T) {
	a, err := querycache.NewAnalyzer(querycache.AnalyzerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for sql, want := range map[string]bool{
		"SET search_path = x":                          true,
		"SET LOCAL statement_timeout = 5":              true,
		"RESET ROLE":                                   true,
		"SHOW TimeZone":                                true,
		"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE": true,
		"SELECT set_config('search_path', 'x', false)": false, // a function: it may write as well
		"UPDATE t SET x = 1":                           false,
		"SET search_path = x; DELETE FROM t":           false,
		"SELEC oops":                                   false,
	} {
		if got := a.SetsOnly(sql); got != want {
			t.Errorf("SetsOnly(%q) = %v, want %v", sql, got, want)
		}
	}
}
