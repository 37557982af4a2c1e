package activities

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
)

// A handler's 100 queued behind a slow post stays kept (flush posts it
// before the outcome) when a later 100 replaces it in the queue. (Found
// by a review of the fix that posts only the first 100 outside the
// budget, which had made the later one not kept.)
func TestProgress_repeated_100_waiting_is_still_kept(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"success":true}`))
	}))
	defer srv.Close()
	defer close(release)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL, APIKey: "k"})
	require.NoError(t, err)
	a := &Activities{TaskManager: api, ProgressInterval: 10 * time.Millisecond}
	p := &progress{a: a, taskID: "1", workerID: "w1", attempt: 1, local: true}
	ctx := context.WithValue(context.Background(), progressKey{}, p)
	ReportProgress(ctx, 10, "working") // in flight, held by the server
	time.Sleep(20 * time.Millisecond)
	ReportProgress(ctx, 100, "done") // the first 100: waiting, kept
	time.Sleep(20 * time.Millisecond)
	ReportProgress(ctx, 100, "done") // again, interval up
	key := markKey("1", 1)
	a.posts.mu.Lock()
	w, ok := a.posts.waiting[key]
	a.posts.mu.Unlock()
	require.True(t, ok)
	require.True(t, w.keep, "the waiting 100 is no longer kept: flush drops it")
}
