package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// The shape of read-late-start: the claim's answer comes back late (after
// half the bridge's claim timeout), so the run starts late and reads the
// task before its handler; the claim still holds it, and the handler runs.
// Saved as history-v14-read-late-start.json.
func TestE2E_histories_replay_v14(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")
	id := s.create("example.echo", map[string]any{"message": "started late"})
	var slowed atomic.Bool
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/tasks/claim") && rec.Code == http.StatusOK && !slowed.Swap(true) {
				time.Sleep(1500 * time.Millisecond) // claimed; the answer comes late
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		})
	}
	srv := httptest.NewServer(mw(s.tm.Handler()))
	t.Cleanup(srv.Close)
	s.url = srv.URL + "/api"
	stop := s.runBridge(nil, "bridge-h14", "--claim-timeout=2s") // half of it passes before the start
	states := s.waitFinal([]string{id})
	stop()
	require.Equal(t, "completed", states[id].Status, states[id].Error)

	h := s.history(s.prefix + id)
	requireReadBehindVersion(t, h, "read-late-start", 1)
	s.replay(map[string]string{"read-late-start": id}, "history-v14-")
}
