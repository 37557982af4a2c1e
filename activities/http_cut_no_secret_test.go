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
