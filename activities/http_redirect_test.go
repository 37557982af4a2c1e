package activities_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
)

// An endpoint that echoes its token into an off-origin redirect's host
// does not get it into the task's error (TaskManager's error_message,
// history). Before, that error was the one the handler did not pass
// through its redactor. (Found by a review.)
func TestHTTP_off_origin_redirect_echoing_the_token_is_redacted(t *testing.T) {
	t.Setenv("HOOK_TOKEN", "hdr-TOKEN-1")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+r.Header.Get("X-Hook-Token")+".invalid/", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	cfg := activities.HTTPConfig{URL: srv.URL + "/hook", HeadersFromEnv: map[string]string{"X-Hook-Token": "HOOK_TOKEN"}}
	_, err := activities.HTTP(cfg, nil).Handle(context.Background(), nil)
	require.ErrorContains(t, err, "refused")
	require.NotContains(t, chainText(err), "hdr-TOKEN-1")
}
