package driver

import (
	"fmt"
	"strings"

	"github.com/pgcache/pgcache/querycache"
)

// relationFilter is Config.Allow and Config.Deny, compiled. A pattern is
// "schema.name", "name" (in any schema) or "schema.*".
type relationFilter struct {
	allow, deny []relationPattern
}

type relationPattern struct{ schema, name string } // "" matches any

func compileFilter(allow, deny []string) (relationFilter, error) {
	var f relationFilter
	for _, list := range []struct {
		field    string
		patterns []string
		out      *[]relationPattern
	}{{"Allow", allow, &f.allow}, {"Deny", deny, &f.deny}} {
		for _, p := range list.patterns {
			schema, name, qualified := strings.Cut(strings.TrimSpace(p), ".")
			if !qualified {
				schema, name = "", schema
			}
			if name == "*" {
				name = ""
			}
			if name == "" && schema == "" || strings.Contains(name, ".") {
				return f, fmt.Errorf("pgcache: Config.%s: %q is not a relation pattern (schema.name, name or schema.*)", list.field, p)
			}
			*list.out = append(*list.out, relationPattern{schema, name})
		}
	}
	return f, nil
}

func (p relationPattern) matches(r querycache.Relation) bool {
	return (p.schema == "" || p.schema == r.Schema) && (p.name == "" || p.name == r.Name)
}

// allows reports whether a statement reading these relations may be cached: none
// denied, and all allowed when there is an allow list.
func (f *relationFilter) allows(reads []querycache.Read) bool {
	if len(f.allow) == 0 && len(f.deny) == 0 {
		return true
	}
	for _, r := range reads {
		for _, p := range f.deny {
			if p.matches(r.Relation) {
				return false
			}
		}
		if len(f.allow) == 0 {
			continue
		}
		allowed := false
		for _, p := range f.allow {
			if p.matches(r.Relation) {
				allowed = true
				break
			}
		}
		if !allowed {
			return false
		}
	}
	return true
}
