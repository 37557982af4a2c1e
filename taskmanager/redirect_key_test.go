package taskmanager_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
)

// A proxy in front of TaskManager answers with a redirect whose Location
// carries the X-API-Key it was sent in its path (an SSO gateway's
// /auth/<credential>/continue): the error hides the key, as it does for
// every other answer that echoes it (RedactURL removes query and userinfo
// only).
func TestClient_redirect_location_echoing_the_key_is_redacted(t *testing.T) {
	const key = "tm-key-6c1f0a93b2d84e57"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/sso/"+r.Header.Get("X-API-Key")+"/continue", http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	c, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL + "/api", APIKey: key})
	require.NoError(t, err)
	_, err = c.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "1"})
	require.Error(t, err)
	require.NotContains(t, chainText(err), key)
}
