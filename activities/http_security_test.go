package activities_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/activities"
)

// chainText is the text of every error in err's chain: Temporal keeps each
// one's message in history.
func chainText(err error) string {
	var b strings.Builder
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		b.WriteString(e.Error())
		b.WriteString("\n")
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return b.String()
}

// closedAddr is a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestHTTP_errors_show_no_secret_of_the_URL(t *testing.T) {
	t.Parallel()
	url := "http://alice:pw-hidden@" + closedAddr(t) + "/hook?token=SECRET#frag-SECRET"
	_, err := activities.HTTP(activities.HTTPConfig{URL: url}, nil).Handle(context.Background(), nil)
	require.Error(t, err)
	require.False(t, activities.IsPermanent(err), "a network error retries")
	text := chainText(err)
	for _, secret := range []string{"SECRET", "pw-hidden", "alice"} {
		require.NotContains(t, text, secret)
	}
	require.Contains(t, text, "/hook", "the URL is still named")

	// A timeout still reads as one.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // only then does the server notice the client leave
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(hang.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = activities.HTTP(activities.HTTPConfig{URL: strings.Replace(hang.URL, "http://", "http://alice:pw-hidden@", 1) + "/x?token=SECRET"}, nil).Handle(ctx, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "net.Error with Timeout: %v", err)
	for _, secret := range []string{"SECRET", "pw-hidden", "alice"} {
		require.NotContains(t, chainText(err), secret)
	}
}

// twoHosts starts an endpoint and another host (both on 127.0.0.1, other
// ports); the other one counts what reaches it and the token it got.
type twoHosts struct {
	endpoint, other *httptest.Server
	otherHits       atomic.Int32
	otherToken      atomic.Value
}

func setupTwoHosts(t *testing.T, endpoint http.HandlerFunc) *twoHosts {
	t.Helper()
	h := &twoHosts{}
	h.other = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.otherHits.Add(1)
		h.otherToken.Store(r.Header.Get("Authorization"))
		_, _ = w.Write([]byte(`{"stolen":true}`))
	}))
	t.Cleanup(h.other.Close)
	h.endpoint = httptest.NewServer(endpoint)
	t.Cleanup(h.endpoint.Close)
	return h
}

func TestHTTP_redirect_to_another_host_is_refused(t *testing.T) {
	t.Setenv("TMBRIDGE_TEST_HOOK_TOKEN", "Bearer tok-SECRET")
	var h *twoHosts
	h = setupTwoHosts(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, h.other.URL+"/steal?token=SECRET", http.StatusTemporaryRedirect)
	})
	cfg := activities.HTTPConfig{URL: h.endpoint.URL + "/hook", HeadersFromEnv: map[string]string{"Authorization": "TMBRIDGE_TEST_HOOK_TOKEN"}}
	_, err := activities.HTTP(cfg, nil).Handle(context.Background(), json.RawMessage(`{"p":1}`))
	require.Error(t, err)
	require.True(t, activities.IsPermanent(err), "no retry can make the redirect safe: %v", err)
	require.Zero(t, h.otherHits.Load(), "the other host never gets the request")
	require.Nil(t, h.otherToken.Load())
	require.ErrorContains(t, err, strings.TrimPrefix(h.endpoint.URL, "http://"), "names the endpoint's host")
	require.ErrorContains(t, err, strings.TrimPrefix(h.other.URL, "http://"), "names the other host")
	require.NotContains(t, chainText(err), "SECRET")

	// A scheme change on the same host is another origin too.
	h2 := setupTwoHosts(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://"+r.Host+"/hook", http.StatusPermanentRedirect)
	})
	_, err = activities.HTTP(activities.HTTPConfig{URL: h2.endpoint.URL + "/hook"}, nil).Handle(context.Background(), nil)
	require.True(t, activities.IsPermanent(err), "%v", err)
	require.ErrorContains(t, err, "https://"+strings.TrimPrefix(h2.endpoint.URL, "http://"))
}

func TestHTTP_follows_at_most_3_redirects_on_the_same_host(t *testing.T) {
	t.Setenv("TMBRIDGE_TEST_HOOK_TOKEN", "Bearer tok-1")
	var loops atomic.Int32
	var h *twoHosts
	h = setupTwoHosts(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a":
			http.Redirect(w, r, "/b?x=1", http.StatusTemporaryRedirect)
		case "/b":
			http.Redirect(w, r, h.endpoint.URL+"/c", http.StatusPermanentRedirect)
		case "/c":
			http.Redirect(w, r, "/d", http.StatusTemporaryRedirect)
		case "/d":
			var p map[string]any
			_ = json.NewDecoder(r.Body).Decode(&p)
			_ = json.NewEncoder(w).Encode(map[string]any{"seen": p, "auth": r.Header.Get("Authorization")})
		default:
			loops.Add(1)
			http.Redirect(w, r, "/loop?token=SECRET", http.StatusTemporaryRedirect)
		}
	})
	cfg := func(path string) activities.HTTPConfig {
		return activities.HTTPConfig{URL: h.endpoint.URL + path, HeadersFromEnv: map[string]string{"Authorization": "TMBRIDGE_TEST_HOOK_TOKEN"}}
	}
	out, err := activities.HTTP(cfg("/a"), nil).Handle(context.Background(), json.RawMessage(`{"p":1}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"seen":{"p":1},"auth":"Bearer tok-1"}`, string(out), "params and headers follow a redirect on the same host")

	_, err = activities.HTTP(cfg("/loop"), nil).Handle(context.Background(), nil)
	require.ErrorContains(t, err, "stopped after 3 redirects")
	require.False(t, activities.IsPermanent(err))
	require.EqualValues(t, 4, loops.Load(), "the request and 3 redirects")
	require.NotContains(t, chainText(err), "SECRET")
	require.Zero(t, h.otherHits.Load())
}

func TestHTTP_answer_over_1MiB_fails(t *testing.T) {
	t.Parallel()
	big := `{"x":"` + strings.Repeat("a", 5<<20) + `"}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(big)) }))
	t.Cleanup(srv.Close)
	_, err := activities.HTTP(activities.HTTPConfig{URL: srv.URL}, nil).Handle(context.Background(), nil)
	require.ErrorContains(t, err, "answer passed 1048576 bytes")
	require.True(t, activities.IsPermanent(err))
}

func TestHTTP_Retry_After_dates_and_cap(t *testing.T) {
	t.Parallel()
	var retryAfter atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", retryAfter.Load().(string))
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	delay := func(v string) time.Duration {
		retryAfter.Store(v)
		_, err := activities.HTTP(activities.HTTPConfig{URL: srv.URL}, nil).Handle(context.Background(), nil)
		var ae *temporal.ApplicationError
		require.True(t, errors.As(err, &ae), "%v", err)
		require.False(t, ae.NonRetryable())
		return ae.NextRetryDelay()
	}
	require.Equal(t, 3*time.Second, delay("3"))
	require.Equal(t, 10*time.Minute, delay("86400"), "capped")
	d := delay(time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat))
	require.Greater(t, d, 80*time.Second, "an HTTP-date counts")
	require.LessOrEqual(t, d, 90*time.Second)
	require.Equal(t, 10*time.Minute, delay(time.Now().Add(48*time.Hour).UTC().Format(http.TimeFormat)), "capped")
	require.Zero(t, delay("soon"))
}

func TestHTTPConfig_Validate_shows_no_secret_of_the_URL(t *testing.T) {
	t.Parallel()
	cfg := activities.HTTPConfig{URL: "ftp://alice:pw-hidden@hooks.example/x?token=SECRET"}
	err := cfg.Validate()
	require.ErrorContains(t, err, "ftp://hooks.example/x")
	for _, secret := range []string{"SECRET", "pw-hidden", "alice"} {
		require.NotContains(t, err.Error(), secret)
	}
}
