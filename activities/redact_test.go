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

// An endpoint that echoes the request in its error page does not get the
// tokens into the task's error (TaskManager, history, logs).
func TestHTTP_answer_echoing_the_tokens_is_redacted(t *testing.T) {
	const header, query, user, fixed = "hdr-TOKEN-1", "qry-TOKEN-2", "usr-TOKEN-3", "Bearer fixed-TOKEN-4"
	t.Setenv("HOOK_TOKEN", header)
	for _, status := range []int{401, 429, 500, 200} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			pw, _ := r.URL.User.Password()
			fmt.Fprintf(w, "bad token %q (%s) for %s?%s %s, escaped %s",
				r.Header.Get("X-Hook-Token"), r.Header.Get("Authorization"), r.URL.Path, r.URL.RawQuery, pw, url.QueryEscape(header))
		}))
		t.Cleanup(srv.Close)
		u, _ := url.Parse(srv.URL + "/hook?token=" + query)
		u.User = url.UserPassword("svc", user)
		cfg := activities.HTTPConfig{URL: u.String(), HeadersFromEnv: map[string]string{"X-Hook-Token": "HOOK_TOKEN"}, Headers: map[string]string{"Authorization": fixed}}
		_, err := activities.HTTP(cfg, nil).Handle(context.Background(), nil)
		require.Error(t, err, status)
		text := chainText(err)
		require.Contains(t, text, "[redacted]", "the answer is still quoted, tokens hidden")
		for _, secret := range []string{header, query, user, "fixed-TOKEN-4"} {
			require.NotContains(t, text, secret, "status %d", status)
		}
	}
}

// A command's stderr that prints a token it was given in env is redacted.
func TestExec_stderr_quoting_its_env_is_redacted(t *testing.T) {
	t.Setenv("PASSED_TOKEN", "passed-TOKEN-1")
	cfg := activities.ExecConfig{
		Command: []string{"sh", "-c", `echo "token $PASSED_TOKEN and $SET_TOKEN refused" >&2; exit 3`},
		Env:     []string{"PASSED_TOKEN", "SET_TOKEN=set-TOKEN-2"},
	}
	_, err := activities.Exec(cfg).Handle(context.Background(), nil)
	require.ErrorContains(t, err, "exited with code 3: token [redacted] and [redacted] refused")
	require.NotContains(t, chainText(err), "TOKEN-")
}

// A webhook's token in its URL path stays out of errors, and so do echoes
// of a token JSON-escaped or percent-encoded in lower case, and a token
// that starts with another configured value.
func TestHTTP_path_tokens_and_escaped_echoes_are_redacted(t *testing.T) {
	const pathToken = "xoxb0123456789ABCDEFghij"
	t.Setenv("SHORT_VALUE", "admin")
	t.Setenv("LONG_TOKEN", "admin-S3CRET/pass")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(403)
		fmt.Fprintf(w, `{"error":"bad %s \/ %q at %s, %s"}`, `admin-S3CRET\/pass`, r.Header.Get("X-Long"), r.URL.Path, strings.ToLower(url.QueryEscape(r.Header.Get("X-Long"))))
	}))
	t.Cleanup(srv.Close)
	cfg := activities.HTTPConfig{URL: srv.URL + "/services/T0001/B0002/" + pathToken,
		HeadersFromEnv: map[string]string{"X-Short": "SHORT_VALUE", "X-Long": "LONG_TOKEN"}}
	_, err := activities.HTTP(cfg, nil).Handle(context.Background(), nil)
	require.Error(t, err)
	text := chainText(err)
	for _, secret := range []string{pathToken, "S3CRET", "s3cret"} {
		require.NotContains(t, text, secret)
	}
	require.Contains(t, text, "/services/T0001/B0002/[redacted]", "the path is shown, its token hidden")

	down := activities.HTTPConfig{URL: "http://" + closedAddr(t) + "/services/T0001/B0002/" + pathToken}
	_, err = activities.HTTP(down, nil).Handle(context.Background(), nil)
	require.Error(t, err)
	require.NotContains(t, chainText(err), pathToken, "a network error names the URL without the token")
}
