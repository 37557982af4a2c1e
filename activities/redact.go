package activities

import (
	"net/url"
	"strings"
)

// minRedacted is the shortest value a redactor hides: shorter ones are no
// secret, and hiding them would garble the text.
const minRedacted = 4

// redactor hides given values (tokens a handler sends, in headers, a URL
// or a command's environment) in text a handler's error quotes from the
// other side: an endpoint's answer, a command's stderr. An endpoint that
// echoes its request ("token … is not valid") would otherwise put the
// token in TaskManager's error_message, Temporal history and logs.
type redactor struct{ r *strings.Replacer }

// newRedactor hides each value, and its URL-encoded forms.
func newRedactor(values ...string) redactor {
	seen := map[string]bool{}
	var pairs []string
	add := func(v string) {
		if len(v) >= minRedacted && !seen[v] {
			seen[v] = true
			pairs = append(pairs, v, "[redacted]")
		}
	}
	for _, v := range values {
		add(v)
		add(url.QueryEscape(v))
		add(url.PathEscape(v))
		if _, token, ok := strings.Cut(v, " "); ok { // "Bearer <token>"
			add(strings.TrimSpace(token))
		}
	}
	return redactor{strings.NewReplacer(pairs...)}
}

// urlSecrets are the parts of a URL that may hold a token: userinfo, the
// query (whole and each value) and the fragment.
func urlSecrets(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return []string{raw}
	}
	var out []string
	if u.User != nil {
		p, _ := u.User.Password()
		out = append(out, u.User.String(), u.User.Username(), p)
	}
	out = append(out, u.RawQuery, u.Fragment)
	for _, vs := range u.Query() {
		out = append(out, vs...)
	}
	return out
}

// tail is the last n bytes of b, trimmed, with the redactor's values
// hidden (before the cut, so no part of one is left at its edge).
func (r redactor) tail(b []byte, n int) string {
	return tail([]byte(r.r.Replace(string(b))), n)
}
