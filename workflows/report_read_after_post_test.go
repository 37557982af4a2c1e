package workflows_test

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/workflows"
)

// TestExactlyOnce_post_of_an_old_claim_that_landed_on_a_newer_one with
// one more fault: the read the report makes after its post (to tell
// whether the post ended a newer claim) answers 503 once. The report is
// retried and reads the outcome recorded, so the run does not continue as
// new for claim 2, whose attempt the post ended. Before, the report
// succeeded without the read and a handler ran for a task that was
// pending. (Found by a review.)
func TestExactlyOnce_read_after_the_post_fails_once(t *testing.T) {
	t.Parallel()
	var b *testBundle
	var failGet atomic.Bool
	race := func(next http.Handler) http.Handler {
		var once sync.Once
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/complete") {
				once.Do(func() {
					b.clock.Add(301 * time.Second)
					claimVia(t, next, "w1", string(b.types["example.error"]))
					b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 2})
				})
				next.ServeHTTP(w, r)
				failGet.Store(true)
				return
			}
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/tasks/") && failGet.CompareAndSwap(true, false) {
				http.Error(w, `{"success":false,"error":"busy"}`, http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	b = setup(t, nil, race)
	in := b.claim(t, "example.error", map[string]any{"message": "old claim"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = time.Now().Add(-10 * time.Minute) // old: the report reads first
	_, err := b.run(in)
	st := b.task(t, in.Task.ID)
	t.Logf("run ended with: %v; task %s attempts %d", err, st.Status, st.Attempts)
	require.Equal(t, "pending", st.Status)
	requireErrorType(t, err, workflows.TaskFailedErrorType) // not continued as new for claim 2
}
