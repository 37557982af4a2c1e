package activities

import (
	"cmp"
	"encoding/json"
	"net/url"
	"slices"
	"strings"

	"github.com/prismq/tmbridge/taskmanager"
)

// minRedacted is the shortest value a redactor hides: shorter ones are no
// secret, and hiding them would garble the text.
const minRedacted = 4

// minPathToken is the shortest URL path segment taken for a token (path
// words are shorter; webhook tokens are longer).
const minPathToken = 16

// redactor hides given values (tokens a handler sends, in headers, a URL
// or a command's environment) in text a handler's error quotes from the
// other side: an endpoint's answer, a command's stderr. An endpoint that
// echoes its request ("token … is not valid") would otherwise put the
// token in TaskManager's error_message, Temporal history and logs.
type redactor struct {
	r       *strings.Replacer
	longest int // bytes of the longest form hidden
}

// newRedactor hides each value and the forms an echo may give it:
// URL-encoded (either case) and JSON-escaped ("\/" too, as PHP writes it).
// Longer values are replaced first, so a value that starts with another is
// hidden whole.
func newRedactor(values ...string) redactor {
	seen := map[string]bool{}
	var forms []string
	add := func(v string) {
		if len(v) >= minRedacted && !seen[v] {
			seen[v] = true
			forms = append(forms, v)
		}
	}
	for _, v := range values {
		if _, token, ok := strings.Cut(v, " "); ok { // "Bearer <token>"
			values = append(values, strings.TrimSpace(token))
		}
	}
	for _, v := range values {
		add(v)
		for _, e := range []string{url.QueryEscape(v), url.PathEscape(v)} {
			add(e)
			add(strings.ToLower(e))
		}
		if b, err := json.Marshal(v); err == nil {
			j := string(b[1 : len(b)-1])
			add(j)
			add(strings.ReplaceAll(j, "/", `\/`))
		}
	}
	slices.SortFunc(forms, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, "[redacted]")
	}
	var longest int
	if len(forms) > 0 {
		longest = len(forms[0])
	}
	return redactor{r: strings.NewReplacer(pairs...), longest: longest}
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
	// Webhook URLs (Slack, Discord, Telegram) carry their token in the path.
	for _, seg := range strings.Split(u.Path, "/") {
		if len(seg) >= minPathToken {
			out = append(out, seg)
		}
	}
	return out
}

// text returns s with the values hidden.
func (r redactor) text(s string) string { return r.r.Replace(s) }

// error returns err with the values hidden in its text.
func (r redactor) error(err error) error { return taskmanager.ScrubError(err, r.text) }

// tail is the last n bytes of b, trimmed, with the redactor's values
// hidden (before the cut, so no part of one is left at its edge).
func (r redactor) tail(b []byte, n int) string {
	return tail([]byte(r.r.Replace(string(b))), n)
}

// cutTail is tail for bytes cut short at their end (an answer read up to a
// bound): a value that straddled the cut left only its start, which the
// redactor cannot know for one, so the last bytes that may hold it go too.
func (r redactor) cutTail(b []byte, n int) string {
	s := r.r.Replace(string(b))
	return tail([]byte(s[:max(0, len(s)-max(r.longest-1, 0))]), n)
}
