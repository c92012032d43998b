package querycache

import (
	"fmt"
	"strings"
	"time"
)

// Directives are instructions to pgcache written in a statement's SQL comments:
//
//	SELECT * FROM users WHERE id = $1 /* pgcache:ttl=30s */
//	/* pgcache:off */ SELECT * FROM audit_log
//
// Several directives may share a comment, separated by commas or spaces
// ("pgcache:off" or "pgcache: ttl=5m"). Unknown directives are ignored so that
// older versions of pgcache do not refuse statements written for newer ones.
type Directives struct {
	Off bool          // pgcache:off: never cache this statement
	TTL time.Duration // pgcache:ttl=D: entry lifetime (a backstop; 0: the store's default)
}

const directivePrefix = "pgcache:"

// parseDirectives reads the directives from the bodies of a statement's comments.
// A malformed ttl is an error, reported by explain; the plan then ignores it.
func parseDirectives(comments []string) (Directives, error) {
	var d Directives
	var errs []string
	for _, c := range comments {
		c = strings.TrimSpace(c)
		for {
			i := strings.Index(c, directivePrefix)
			if i < 0 {
				break
			}
			c = c[i+len(directivePrefix):]
			end := strings.IndexAny(c, "*/\n")
			body := c
			if end >= 0 {
				body = c[:end]
			}
			for _, item := range strings.FieldsFunc(body, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
				name, value, hasValue := strings.Cut(item, "=")
				switch strings.ToLower(name) {
				case "off":
					d.Off = true
				case "ttl":
					ttl, err := time.ParseDuration(value)
					if !hasValue || err != nil || ttl <= 0 {
						errs = append(errs, fmt.Sprintf("pgcache:ttl=%s: want a positive duration such as 30s", value))
						continue
					}
					d.TTL = ttl
				}
			}
		}
	}
	if len(errs) > 0 {
		return d, fmt.Errorf("querycache: %s", strings.Join(errs, "; "))
	}
	return d, nil
}
