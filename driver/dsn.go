package driver

import (
	"fmt"
	"net/url"
	"strings"
)

// optionPrefix marks the DSN parameters that are pgcache's own. They are removed
// before pgx sees the DSN, so PostgreSQL never receives them as run-time parameters.
const optionPrefix = "pgcache_"

// splitDSN separates pgcache's own parameters from a DSN in either of the forms pgx
// accepts (postgres:// URL, or keyword/value). The rest of the DSN is returned
// byte for byte as it was, so pgx parses exactly what it would have parsed without
// pgcache. A DSN pgcache cannot tokenize is returned whole: pgx then reports the
// error it would have reported anyway.
func splitDSN(dsn string) (rest string, options map[string]string, err error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return splitURL(dsn)
	}
	return splitKeywordValue(dsn)
}

func splitURL(dsn string) (string, map[string]string, error) {
	q := strings.IndexByte(dsn, '?')
	if q < 0 {
		return dsn, nil, nil
	}
	query, fragment := dsn[q+1:], ""
	if h := strings.IndexByte(query, '#'); h >= 0 {
		query, fragment = query[:h], query[h:]
	}
	var options map[string]string
	var kept []string
	for _, part := range strings.Split(query, "&") {
		rawKey, rawValue, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil || !strings.HasPrefix(key, optionPrefix) {
			kept = append(kept, part)
			continue
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return "", nil, fmt.Errorf("pgcache: DSN parameter %s: invalid URL escape", key)
		}
		if options == nil {
			options = make(map[string]string)
		}
		options[key] = value
	}
	rest := dsn[:q]
	if len(kept) > 0 {
		rest += "?" + strings.Join(kept, "&")
	}
	return rest + fragment, options, nil
}

const keywordSpace = " \t\n\r\v\f"

func isKeywordSpace(c byte) bool { return strings.IndexByte(keywordSpace, c) >= 0 }

// splitKeywordValue follows pgconn's keyword/value grammar (libpq's): key = value
// pairs separated by white space; values unquoted (backslash escapes) or single
// quoted (backslash escapes; a doubled quote is not an escape).
func splitKeywordValue(dsn string) (string, map[string]string, error) {
	if !strings.Contains(dsn, optionPrefix) {
		return dsn, nil, nil
	}
	var options map[string]string
	var rest strings.Builder
	s := dsn
	for {
		trimmed := strings.TrimLeft(s, keywordSpace)
		lead := s[:len(s)-len(trimmed)]
		s = trimmed
		if s == "" {
			rest.WriteString(lead)
			break
		}
		pairStart := s
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return dsn, nil, nil // malformed: pgx reports it
		}
		key := strings.Trim(s[:eq], keywordSpace)
		s = strings.TrimLeft(s[eq+1:], keywordSpace)
		var value string
		switch {
		case s == "":
		case s[0] != '\'':
			end := 0
			for ; end < len(s) && !isKeywordSpace(s[end]); end++ {
				if s[end] == '\\' {
					end++
					if end == len(s) {
						break
					}
				}
			}
			end = min(end, len(s))
			value, s = unescapeKeywordValue(s[:end]), s[end:]
		default:
			body := s[1:]
			end := 0
			for ; end < len(body) && body[end] != '\''; end++ {
				if body[end] == '\\' {
					end++
				}
			}
			if end >= len(body) {
				return dsn, nil, nil // unterminated quote: pgx reports it
			}
			value, s = unescapeKeywordValue(body[:end]), body[end+1:]
		}
		pair := pairStart[:len(pairStart)-len(s)]
		if strings.HasPrefix(key, optionPrefix) {
			if options == nil {
				options = make(map[string]string)
			}
			options[key] = value
			continue
		}
		rest.WriteString(lead)
		rest.WriteString(pair)
	}
	return strings.TrimLeft(rest.String(), keywordSpace), options, nil
}

func unescapeKeywordValue(s string) string {
	if !strings.ContainsRune(s, '\\') {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			if i == len(s) {
				break
			}
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}
