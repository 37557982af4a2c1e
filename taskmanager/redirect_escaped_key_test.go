package taskmanager_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
)

// A gateway that echoes the API key escaped in the redirect's path: the
// error names the Location's scheme and host only. (Found by a review.)
func TestClient_redirect_location_echoing_the_escaped_key_is_hidden(t *testing.T) {
	const key = "tmkey/6c1f0a93b2d84e57Q"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/sso/"+url.PathEscape(r.Header.Get("X-API-Key"))+"/continue", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	c, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL + "/api", APIKey: key})
	require.NoError(t, err)
	_, err = c.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "1"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "6c1f0a93b2d84e57Q")
}
