package devserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// post sends body to the server's /api/tasks with the key; chunked sends
// it without a Content-Length.
func post(t *testing.T, url, key string, body []byte, chunked bool) int {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // hides the length
	}
	req, err := http.NewRequest(http.MethodPost, url+"/tasks", r)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func taskBody(paramBytes int) []byte {
	return []byte(`{"type":"example.echo","params":{"message":"` + strings.Repeat("x", paramBytes) + `"}}`)
}

func TestServer_body_limit_by_default(t *testing.T) {
	t.Parallel()
	for _, style := range styles {
		srv := devserver.New(devserver.Options{Style: style, APIKey: "k"})
		url := srv.Start(t)
		c, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: "k"})
		require.NoError(t, err)
		_, err = c.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: "example.echo", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
		require.NoError(t, err)

		code := post(t, url, "k", taskBody(2_100_000), false)
		require.True(t, code == http.StatusOK || code == http.StatusCreated, "%s: 2.1 MB params pass (over Temporal's 2 MB payload limit): %d", style, code)
		require.Equal(t, http.StatusRequestEntityTooLarge, post(t, url, "k", taskBody(devserver.DefaultMaxBodyBytes), false), "%s: over the default limit", style)
		require.Equal(t, http.StatusRequestEntityTooLarge, post(t, url, "k", taskBody(devserver.DefaultMaxBodyBytes), true), "%s: chunked, over the default limit", style)
	}
}

func TestServer_body_limit_holds_without_Content_Length(t *testing.T) {
	t.Parallel()
	srv := devserver.New(devserver.Options{APIKey: "k", MaxBodyBytes: 1000})
	url := srv.Start(t)
	require.Equal(t, http.StatusRequestEntityTooLarge, post(t, url, "k", taskBody(2000), true))
	require.Equal(t, http.StatusRequestEntityTooLarge, post(t, url, "k", taskBody(2000), false))
	require.Equal(t, http.StatusNotFound, post(t, url, "k", taskBody(10), true), "a small body gets through (to an unknown type)")
}

func TestServer_API_key(t *testing.T) {
	t.Parallel()
	srv := devserver.New(devserver.Options{APIKey: "the-key"})
	url := srv.Start(t)
	for _, key := range []string{"", "the-ke", "the-kez", "THE-KEY", "the-key-and-more"} {
		require.Equal(t, http.StatusUnauthorized, post(t, url, key, taskBody(1), false), "%q", key)
	}
	require.Equal(t, http.StatusNotFound, post(t, url, "the-key", taskBody(1), false), "the right key gets through (to an unknown type)")
	resp, err := http.Get(url + "/health")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "health needs no key")
}

func TestServer_Listen_defaults_to_loopback(t *testing.T) {
	t.Parallel()
	hs, url, err := devserver.New(devserver.Options{}).Listen("")
	require.NoError(t, err)
	t.Cleanup(func() { _ = hs.Close() })
	require.True(t, strings.HasPrefix(url, "http://127.0.0.1:"), url)
}
