package taskmanager

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxRetryAfter is the longest wait ParseRetryAfter returns: a server (or
// a proxy in front of it) cannot park a claim loop, a report or a handler
// for longer than this with one answer.
const MaxRetryAfter = 10 * time.Minute

// ParseRetryAfter reads a Retry-After header value (RFC 9110, section
// 10.2.3): delay-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2015
// 07:28:00 GMT", and the two obsolete date forms), the latter relative to
// now. It returns at most MaxRetryAfter, and 0 for an empty, negative,
// fractional or otherwise malformed value and for a date not after now.
//
//	d := taskmanager.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil || s > uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter // digits only, too many to count: a long wait
		}
		return time.Duration(s) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(t.Sub(now), 0), MaxRetryAfter)
}
