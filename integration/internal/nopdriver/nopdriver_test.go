package nopdriver_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"testing"
	"time"

	"github.com/pgcache/pgcache/integration/internal/nopdriver"
)

func TestCannedRows(t *testing.T) {
	when := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	db := sql.OpenDB(&nopdriver.Connector{
		Columns: []string{"id", "name", "at"},
		Rows:    [][]driver.Value{{int64(1), "one", when}, {int64(2), nil, when}},
	})
	defer db.Close()
	for range 2 { // the connection's reused Rows start over
		rows, err := db.QueryContext(context.Background(), "anything", 42)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var id int
			var name sql.NullString
			var at time.Time
			if err := rows.Scan(&id, &name, &at); err != nil {
				t.Fatal(err)
			}
			if !at.Equal(when) {
				t.Errorf("at = %v", at)
			}
			got = append(got, name.String)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0] != "one" || got[1] != "" {
			t.Fatalf("rows: %q", got)
		}
	}
}
