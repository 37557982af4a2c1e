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

// A proxy in front of TaskManager answers with a redirect whose Location
// carries the X-API-Key it was sent in its path (an SSO gateway's
// /auth/<credential>/continue), as it is or escaped: the error names the
// Location's scheme and host only, so no form of the key reaches it.
// (Found by a review.)
func TestClient_redirect_location_echoing_the_key_is_hidden(t *testing.T) {
	for key, echo := range map[string]func(string) string{
		"tm-key-6c1f0a93b2d84e57": func(k string) string { return k },
		"tmkey/6c1f0a93b2d84e57Q": url.PathEscape,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/sso/"+echo(r.Header.Get("X-API-Key"))+"/continue", http.StatusFound)
		}))
		t.Cleanup(srv.Close)
		c, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL + "/api", APIKey: key})
		require.NoError(t, err)
		_, err = c.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "1"})
		require.ErrorContains(t, err, "redirected to "+srv.URL+"; tmbridge follows no redirect")
		require.NotContains(t, chainText(err), "6c1f0a93b2d84e57", key)
	}
}
