package taskmanager

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
)

// RedactURL returns a URL fit for errors and logs: without userinfo, query
// and fragment, where tokens travel (https://hooks.example/x?token=… shows
// as https://hooks.example/x). A URL that does not parse is cut the same
// way, as text.
func RedactURL(s string) string {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || (u.Host == "" && strings.Contains(s, "@")) {
		return cutURL(s) // not a URL with a host: "user:password@host/x" parses as scheme "user"
	}
	u.User = nil
	u.RawQuery, u.ForceQuery = "", false
	u.Fragment, u.RawFragment = "", ""
	return u.String()
}

// RedactURLError returns err, as an http.Client's Do returns it, with its
// URLs redacted as by RedactURL: a *url.Error is rebuilt with the redacted
// URL (Go's own only hides the password, and keeps the query), and so is
// its cause when its text holds a URL. errors.Is and errors.As still see
// the cause: timeouts, context.Canceled, context.DeadlineExceeded, net
// errors. Other errors are returned as they are.
//
// Each error of a chain is kept in Temporal history with its own message,
// so the rebuilt error holds no error whose text has the secret.
func RedactURLError(err error) error {
	ue, ok := err.(*url.Error)
	if !ok {
		return err
	}
	cause := ue.Err
	if cause != nil {
		if msg := scrubURLs(strings.ReplaceAll(cause.Error(), ue.URL, RedactURL(ue.URL))); msg != cause.Error() {
			cause = &scrubbedError{msg: msg, cause: cause}
		}
	}
	return &url.Error{Op: ue.Op, URL: RedactURL(ue.URL), Err: cause}
}

// ScrubError returns err with its text passed through scrub (which hides
// secrets in it). The result matches what err matches (errors.Is, As), but
// does not unwrap to it: err's own text would reach logs and history.
func ScrubError(err error, scrub func(string) string) error {
	if err == nil {
		return nil
	}
	if msg := scrub(err.Error()); msg != err.Error() {
		return &scrubbedError{msg: msg, cause: err}
	}
	return err
}

// scrubbedError stands for an error whose text held a secret (a URL's
// query or userinfo, the API key). It matches
// what its cause matches, but does not unwrap to it: the cause's text
// would reach logs and history.
type scrubbedError struct {
	msg   string
	cause error
}

func (e *scrubbedError) Error() string        { return e.msg }
func (e *scrubbedError) Is(target error) bool { return errors.Is(e.cause, target) }
func (e *scrubbedError) As(target any) bool   { return errors.As(e.cause, target) }

// urlish matches what may be a URL in an error's text: scheme://… or a
// path with a query or fragment, up to white space or a quote.
var urlish = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>]+|/[^\s"'<>]*[?#][^\s"'<>]*`)

// scrubURLs redacts every URL-like part of s.
func scrubURLs(s string) string {
	return urlish.ReplaceAllStringFunc(s, RedactURL)
}

// cutURL redacts a URL as text: everything from the first ? or # goes,
// and so does the userinfo before the host.
func cutURL(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	prefix, rest := "", s
	if i := strings.Index(s, "://"); i >= 0 {
		prefix, rest = s[:i+3], s[i+3:]
	}
	authority := rest
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		authority = rest[:j]
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		s = prefix + rest[at+1:] // user:password@ goes, with or without a scheme
	}
	return s
}

// redactKey returns s with every occurrence of the API key replaced by
// [redacted], for messages built from an answer that may echo it. A key
// shorter than minRedactedKey is not looked for: it would match ordinary
// words ("k" in "key"), and is no secret worth the name.
func redactKey(s, apiKey string) string {
	if len(apiKey) < minRedactedKey {
		return s
	}
	return strings.ReplaceAll(s, apiKey, "[redacted]")
}

const minRedactedKey = 8
