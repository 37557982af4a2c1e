package workflows_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/workflows"
)

// readBackRace is a TaskManager middleware for a run whose report of claim
// 1 (an old claim: read first) posts a failure. As the post comes in,
// before (ended, the post lands on claim 2) or after it (the post lands
// on claim 1, and claim 2 is the task's next attempt), worker w1 claims
// the task again and the claim reaches the run; then claimedBy, if set,
// claims the task once more (attempt 3). The read the report makes after
// its post answers 503 when failRead is set.
type readBackRace struct {
	b         **testBundle
	t         *testing.T
	ended     bool
	failRead  bool
	claimedBy string
	posted    atomic.Bool
}

func (r *readBackRace) middleware(next http.Handler) http.Handler {
	var once sync.Once
	var failed atomic.Bool
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/complete") {
			first := false
			once.Do(func() {
				first = true
				b := *r.b
				typeID := string(b.types["example.error"])
				if r.ended {
					b.clock.Add(301 * time.Second)
					claimVia(r.t, next, "w1", typeID)
				}
				next.ServeHTTP(w, req)
				if !r.ended {
					claimVia(r.t, next, "w1", typeID)
				}
				b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 2})
				if r.claimedBy != "" {
					b.clock.Add(301 * time.Second)
					claimVia(r.t, next, r.claimedBy, typeID)
				}
				r.posted.Store(true)
			})
			if !first {
				next.ServeHTTP(w, req)
			}
			return
		}
		if r.failRead && req.Method == http.MethodGet && r.posted.Load() && strings.Contains(req.URL.Path, "/tasks/") && !failed.Swap(true) {
			http.Error(w, `{"success":false,"error":"busy"}`, http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// run runs a failing task of an old claim through the race.
func (r *readBackRace) run(t *testing.T) (error, *testBundle, string) {
	var b *testBundle
	r.b, r.t = &b, t
	b = setup(t, nil, r.middleware)
	in := b.claim(t, "example.error", map[string]any{"message": "old claim"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = time.Now().Add(-10 * time.Minute) // old: the report reads first
	_, err := b.run(in)
	return err, b, in.Task.ID
}

// TestExactlyOnce_post_of_an_old_claim_that_landed_on_a_newer_one with
// one more fault: the read the report makes after its post (to tell
// whether the post ended a newer claim) answers 503 once. The run reads
// the task itself (a tmbridge.ReadTask activity) and does not continue as
// new for claim 2, whose attempt the post ended. Before, the report
// answered without the read, and the run continued as new: a handler ran
// for a task that was pending. (Found by a review.)
func TestExactlyOnce_read_after_the_post_fails_once(t *testing.T) {
	t.Parallel()
	r := &readBackRace{ended: true, failRead: true}
	err, b, id := r.run(t)
	requireErrorType(t, err, workflows.TaskFailedErrorType) // not continued as new for claim 2
	st := b.task(t, id)
	require.Equal(t, "pending", st.Status)
	require.Equal(t, 2, st.Attempts, "the post ended claim 2; no handler ran for it")
}

// The same read fails, but the post landed on claim 1 and claim 2 is the
// task's next attempt: the run's own read finds it claimed by w1, and the
// run continues as new for it.
func TestExactlyOnce_read_after_the_post_fails_and_the_newer_claim_holds(t *testing.T) {
	t.Parallel()
	r := &readBackRace{ended: false, failRead: true}
	err, b, id := r.run(t)
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(err, &can), "continued as new for claim 2: %v", err)
	st := b.task(t, id)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, 2, st.Attempts)
}

// The post landed on claim 1, and by the report's read after it another
// worker had claimed the task again (claim 2 timed out): claim 2 is over,
// and the run runs no handler for it. Before, only a task no longer
// claimed counted as over, and the run continued as new for claim 2.
// (Found by a review.)
func TestExactlyOnce_newer_claim_taken_by_another_worker_before_the_read_runs_no_handler(t *testing.T) {
	t.Parallel()
	r := &readBackRace{ended: false, claimedBy: "w3"}
	err, b, id := r.run(t)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, id)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, "w3", st.ClaimedBy)
	require.Equal(t, 3, st.Attempts)
}
