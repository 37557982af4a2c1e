package taskmanager_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"600", 10 * time.Minute},
		{"601", taskmanager.MaxRetryAfter},
		{"86400", taskmanager.MaxRetryAfter},
		{"99999999999999999999999", taskmanager.MaxRetryAfter},
		{"-5", 0},
		{"+5", 0},
		{"1.5", 0},
		{"5s", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},        // IMF-fixdate
		{now.Add(90 * time.Second).Format(time.RFC850), 90 * time.Second},            // obsolete RFC 850
		{now.Add(90 * time.Second).Format(time.ANSIC), 90 * time.Second},             // obsolete asctime
		{now.Add(48 * time.Hour).Format(http.TimeFormat), taskmanager.MaxRetryAfter}, // capped
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},                           // past
		{now.Format(http.TimeFormat), 0},                                             // now
		{"Sun, 31 Nov 2026 03:00:00 GMT", 0},                                         // no such day
		{strings.Replace(now.Format(http.TimeFormat), "GMT", "XYZ", 1), 0},           // not GMT
	} {
		require.Equal(t, tc.want, taskmanager.ParseRetryAfter(tc.in, now), "%q", tc.in)
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	for _, s := range []string{"", "0", "7", "601", "-1", "1e3", "99999999999999999999", now.Format(http.TimeFormat), now.Add(time.Hour).Format(time.RFC850), "Sun, 06 Nov 1994 08:49:37 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := taskmanager.ParseRetryAfter(v, now)
		if d < 0 || d > taskmanager.MaxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %s, out of [0, %s]", v, d, taskmanager.MaxRetryAfter)
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil && strings.Trim(strings.TrimSpace(v), "0123456789") == "" {
			if want := min(time.Duration(n)*time.Second, taskmanager.MaxRetryAfter); d != want {
				t.Fatalf("ParseRetryAfter(%q) = %s, want %s", v, d, want)
			}
		}
	})
}
