package taskmanager_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
)

// An error answer of megabytes (a message, many details) makes an error of
// about a kilobyte: it goes to logs and to Temporal, whose messages have
// a size limit. It is classified on its whole text first. (Found by a
// review.)
func TestClient_huge_error_answer_is_cut(t *testing.T) {
	details := make([]string, 20)
	for i := range details {
		details[i] = strings.Repeat("d", 10_000)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]any{"success": false, "error": "Task is not in claimed state " + strings.Repeat("é", 1<<20), "details": details})
	}))
	t.Cleanup(srv.Close)
	c, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL, APIKey: "k"})
	require.NoError(t, err)
	_, err = c.Complete(context.Background(), "1", taskmanager.Completion{WorkerID: "w", Success: true})
	require.ErrorIs(t, err, taskmanager.ErrNotClaimed)
	require.Less(t, len(err.Error()), 5000, "an error of %d bytes", len(err.Error()))
	require.Contains(t, err.Error(), "… (cut)")
	require.Contains(t, err.Error(), "and 10 more")
	require.True(t, strings.ToValidUTF8(err.Error(), "") == err.Error(), "cut inside a rune")
}
