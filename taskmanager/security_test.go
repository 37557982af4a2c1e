package taskmanager_test

import (
	"context"
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

	"github.com/prismq/tmbridge/taskmanager"
)

// chainText is the text of every error in err's chain.
func chainText(err error) string {
	var b strings.Builder
	for ; err != nil; err = errors.Unwrap(err) {
		b.WriteString(err.Error())
		b.WriteString("\n")
	}
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

var urlSecrets = []string{"SECRET", "pw-hidden", "alice"}

func TestClient_errors_show_no_secret_of_the_URL(t *testing.T) {
	t.Parallel()
	c, err := taskmanager.New(taskmanager.Options{BaseURL: "http://alice:pw-hidden@" + closedAddr(t) + "/api?token=SECRET", APIKey: testKey})
	require.NoError(t, err)
	for _, s := range urlSecrets {
		require.NotContains(t, c.BaseURL(), s)
	}
	_, err = c.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: "1"})
	require.ErrorIs(t, err, taskmanager.ErrTransient)
	require.Contains(t, err.Error(), "/api/tasks/claim", "the URL is still named")
	for _, s := range append(urlSecrets, testKey) {
		require.NotContains(t, chainText(err), s)
	}

	// A timeout still reads as one.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(hang.Close)
	slow, err := taskmanager.New(taskmanager.Options{BaseURL: strings.Replace(hang.URL, "http://", "http://alice:pw-hidden@", 1) + "/api", Timeout: 50 * time.Millisecond})
	require.NoError(t, err)
	_, err = slow.ListTasks(context.Background(), taskmanager.TaskFilter{Status: "claimed"})
	require.ErrorIs(t, err, taskmanager.ErrTransient)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "net.Error with Timeout: %v", err)
	for _, s := range urlSecrets {
		require.NotContains(t, chainText(err), s)
	}
}

func TestNew_error_shows_no_secret_of_the_URL(t *testing.T) {
	t.Parallel()
	_, err := taskmanager.New(taskmanager.Options{BaseURL: "ftp://alice:pw-hidden@tm.example/api?token=SECRET"})
	require.Error(t, err)
	for _, s := range urlSecrets {
		require.NotContains(t, err.Error(), s)
	}
}

// TestClient_follows_no_redirect: X-API-Key goes to the configured
// TaskManager only; a 3xx is a transient error saying where it pointed.
func TestClient_follows_no_redirect(t *testing.T) {
	t.Parallel()
	var otherHits atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"success":true,"data":{"id":1}}`))
	}))
	t.Cleanup(other.Close)
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		tm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.Path+"?token=SECRET", status)
		}))
		t.Cleanup(tm.Close)
		for _, client := range []*http.Client{nil, {}} {
			c, err := taskmanager.New(taskmanager.Options{BaseURL: tm.URL + "/api", APIKey: testKey, HTTPClient: client})
			require.NoError(t, err)
			_, err = c.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: "1"})
			requireKind(t, err, taskmanager.ErrTransient, status)
			require.True(t, taskmanager.Retryable(err))
			require.ErrorContains(t, err, "redirected to "+other.URL+"; tmbridge follows no redirect")
			require.NotContains(t, chainText(err), "SECRET")
			_, err = c.GetTask(context.Background(), "1")
			requireKind(t, err, taskmanager.ErrTransient, status)
		}
	}
	require.Zero(t, otherHits.Load(), "the other host never gets a request, nor the key")
}

func TestClient_caps_Retry_After(t *testing.T) {
	t.Parallel()
	var retryAfter atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", retryAfter.Load().(string))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"success":false,"error":"Too many requests"}`))
	}))
	t.Cleanup(srv.Close)
	c, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL + "/api", APIKey: testKey})
	require.NoError(t, err)
	wait := func(v string) time.Duration {
		retryAfter.Store(v)
		_, err := c.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w", TaskTypeID: "1"})
		requireKind(t, err, taskmanager.ErrRateLimited, 429)
		return taskmanager.RetryAfter(err)
	}
	require.Equal(t, 7*time.Second, wait("7"))
	require.Equal(t, 10*time.Minute, wait("86400"), "capped")
	require.Equal(t, 10*time.Minute, wait(time.Now().Add(72*time.Hour).UTC().Format(http.TimeFormat)), "capped")
	d := wait(time.Now().Add(2 * time.Minute).UTC().Format(http.TimeFormat))
	require.Greater(t, d, 110*time.Second)
	require.LessOrEqual(t, d, 2*time.Minute)
	require.Zero(t, wait("-5"))
}

// An answer past the 16 MiB bound (a proxy's endless body) is not read on
// until the call's timeout: the call ends once the bound is passed, with
// an error saying so. Before, the rest was drained for the whole timeout
// (gigabytes), and the error spoke of JSON that ended early.
func TestClient_answer_past_the_bound_is_not_read_on(t *testing.T) {
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"success":true,"data":{"items":[`))
		chunk := []byte(strings.Repeat(`{"id":1},`, 1<<13))
		for r.Context().Err() == nil {
			n, err := w.Write(chunk)
			if sent.Add(int64(n)); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	c, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL, APIKey: "k", Timeout: time.Minute})
	require.NoError(t, err)
	_, err = c.ListTasks(context.Background(), taskmanager.TaskFilter{Status: taskmanager.StatusPending})
	require.ErrorContains(t, err, "answer over 16 MiB")
	require.ErrorIs(t, err, taskmanager.ErrTransient)
	require.Less(t, sent.Load(), int64(64<<20), "bytes the server wrote before the bridge hung up")
}
