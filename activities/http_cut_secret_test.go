package activities_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
)

// An endpoint's error page (over MaxResultBytes) echoes the token it was
// sent, and the echo straddles the handler's read bound: the error quotes
// no part of the token (the redactor cannot know a token's start for one).
func TestHTTP_error_body_cut_at_the_read_bound_quotes_no_part_of_a_token(t *testing.T) {
	const token = "Zq7xK9mP2wL5vN8rT4yBcD3f"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		body := strings.Repeat("x", activities.MaxResultBytes-14) + "token " + r.Header.Get("X-Token") + " is bad" + strings.Repeat("y", 100)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	h := activities.HTTP(activities.HTTPConfig{URL: srv.URL, Headers: map[string]string{"X-Token": token}}, nil)
	_, err := h.Handle(context.Background(), nil)
	require.Error(t, err)
	msg := err.Error()
	require.NotContains(t, msg, token[:8], "part of the token reached the error: …%s", msg[max(0, len(msg)-40):])
}

// An http handler with no secret (no header, no query): its endpoint's
// error page over the read bound must give the 5xx error, not panic in
// cutTail (no value to hide: longest 0).
func TestHTTP_error_page_cut_with_no_secret_to_hide_gives_its_error(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(strings.Repeat("x", activities.MaxResultBytes+1000)))
	}))
	t.Cleanup(srv.Close)
	h := activities.HTTP(activities.HTTPConfig{URL: srv.URL}, nil)
	var err error
	require.NotPanics(t, func() { _, err = h.Handle(context.Background(), nil) })
	require.ErrorContains(t, err, "500 Internal Server Error")
}
