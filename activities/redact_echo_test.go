package activities_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
)

func reviewEcho(t *testing.T, answer func(r *http.Request) string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		fmt.Fprint(w, answer(r))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// An endpoint that echoes only the token of "Bearer <token>".
func TestRedact_bearer_token_echoed_alone_is_redacted(t *testing.T) {
	t.Parallel()
	const token = "bearer-only-TOKEN-42"
	u := reviewEcho(t, func(r *http.Request) string {
		return "token " + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") + " revoked"
	})
	cfg := activities.HTTPConfig{URL: u + "/hook", Headers: map[string]string{"Authorization": "Bearer " + token}}
	_, err := activities.HTTP(cfg, nil).Handle(context.Background(), nil)
	require.Error(t, err)
	require.NotContains(t, chainText(err), token)
}

// A URL's user name alone can be the token (https://TOKEN@host).
func TestRedact_url_username_echoed_is_redacted(t *testing.T) {
	t.Parallel()
	const token = "user-name-TOKEN-43"
	raw := reviewEcho(t, func(r *http.Request) string {
		name, _, _ := r.BasicAuth()
		return "unknown user " + name
	})
	u, _ := url.Parse(raw + "/hook")
	u.User = url.UserPassword(token, "pw-1")
	_, err := activities.HTTP(activities.HTTPConfig{URL: u.String()}, nil).Handle(context.Background(), nil)
	require.Error(t, err)
	require.NotContains(t, chainText(err), token)
}

// The answer is redacted before it is cut to its last 500 bytes,
// so no part of a token is left at the cut.
func TestRedact_token_at_the_cut_leaves_no_part(t *testing.T) {
	t.Parallel()
	const token = "cut-edge-TOKEN-0123456789"
	u := reviewEcho(t, func(r *http.Request) string {
		return r.Header.Get("X-Token") + strings.Repeat("x", 490)
	})
	cfg := activities.HTTPConfig{URL: u + "/hook", Headers: map[string]string{"X-Token": token}}
	_, err := activities.HTTP(cfg, nil).Handle(context.Background(), nil)
	require.Error(t, err)
	require.NotContains(t, chainText(err), token[len(token)-10:])
}
