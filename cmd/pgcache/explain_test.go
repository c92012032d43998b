package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestExplainCatalogFree(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"explain", `SELECT * FROM users WHERE id = $1 /* pgcache:ttl=30s */`}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"catalog not checked", `read "users" where (id)=($1)`, "directive: ttl=30s", "not checked: function and operator volatility"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"explain", "SELECT * FROM t FOR UPDATE"}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "not cacheable: locking clause") {
		t.Errorf("exit %d, output:\n%s", code, out.String())
	}
	if code := run(context.Background(), []string{"explain"}, &out, &errOut); code != 2 {
		t.Errorf("no statement: exit %d", code)
	}
}
