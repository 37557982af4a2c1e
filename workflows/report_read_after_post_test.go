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
// its post answers 503 when failRead is set; with claimOnRead, the next
// read (the run's own) comes after w1 claimed the task once more (attempt
// 3) and that claim reached the run; with deleted, every read after the
// post finds the task gone.
type readBackRace struct {
	b           **testBundle
	t           *testing.T
	ended       bool
	failRead    bool
	claimedBy   string
	claimOnRead bool
	deleted     bool
	posted      atomic.Bool
}

func (r *readBackRace) middleware(next http.Handler) http.Handler {
	var once sync.Once
	var failed, reclaimed atomic.Bool
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
		readAfter := req.Method == http.MethodGet && r.posted.Load() && strings.Contains(req.URL.Path, "/tasks/")
		switch {
		case readAfter && r.deleted:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"success":true,"message":"ok","data":{"items":[]},"timestamp":1}`)) // PHP: gone
			return
		case readAfter && r.failRead && !failed.Swap(true):
			http.Error(w, `{"success":false,"error":"busy"}`, http.StatusServiceUnavailable)
			return
		case readAfter && r.claimOnRead && !reclaimed.Swap(true):
			b := *r.b
			claimVia(r.t, next, "w1", string(b.types["example.error"]))
			b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 3})
		}
		next.ServeHTTP(w, req)
	})
}

// run runs a failing task of an old claim through the race.
func (r *readBackRace) run(t *testing.T) (*testBundle, string, error) {
	var b *testBundle
	r.b, r.t = &b, t
	b = setup(t, nil, r.middleware)
	in := b.claim(t, "example.error", map[string]any{"message": "old claim"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = time.Now().Add(-10 * time.Minute) // old: the report reads first
	_, err := b.run(in)
	return b, in.Task.ID, err
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
	b, id, err := r.run(t)
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
	b, id, err := r.run(t)
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
	b, id, err := r.run(t)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, id)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, "w3", st.ClaimedBy)
	require.Equal(t, 3, st.Attempts)
}

// The post of claim 1 lands on claim 2 (ended: pending), the report's
// read after the post fails, and while the run's own tmbridge.ReadTask
// activity is under way w1 claims the task again (attempt 3) and signals
// claim 3 to the open run, as bridge/start.go tryStart does. The run takes
// claim 3 and continues as new for it. Before, ReadTask's wait read no
// signal: attempt 3 read as past claim 2, and the run closed with claim 3
// unread, the task claimed with no run. (Found by a review.)
func TestExactlyOnce_claim_signalled_while_the_run_reads_is_taken(t *testing.T) {
	t.Parallel()
	r := &readBackRace{ended: true, failRead: true, claimOnRead: true}
	b, id, err := r.run(t)
	st := b.task(t, id)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, 3, st.Attempts)
	require.Equal(t, "w1", st.ClaimedBy)
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(err, &can), "claim 3 holds the task and was signalled to this run: it must get a run; got %v", err)
}

// cancelOnPost cancels the run as its report posts (the report survives a
// cancel: changeReportSurvivesCancel).
func cancelOnPost(b **testBundle) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if strings.HasSuffix(req.URL.Path, "/complete") {
				(*b).env.CancelWorkflow()
			}
			next.ServeHTTP(w, req)
		})
	}
}

func runCancelled(t *testing.T, failRead bool) (*testBundle, string, error) {
	var b *testBundle
	r := &readBackRace{ended: false, failRead: failRead}
	r.b, r.t = &b, t
	cancel := cancelOnPost(&b)
	b = setup(t, nil, func(h http.Handler) http.Handler { return r.middleware(cancel(h)) })
	in := b.claim(t, "example.error", map[string]any{"message": "old claim"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = time.Now().Add(-10 * time.Minute)
	_, err := b.run(in)
	return b, in.Task.ID, err
}

// A run cancelled during its report, whose report read the task after
// the post, continues as new for claim 2 (w1's, holding the task).
func TestExactlyOnce_cancelled_run_continues_for_a_newer_claim(t *testing.T) {
	t.Parallel()
	b, id, err := runCancelled(t, false)
	st := b.task(t, id)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, 2, st.Attempts)
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(err, &can), "got %v", err)
}

// The same, but the report's read after the post failed once: the run
// reads the task itself, cancelled as it is, and continues as new for
// claim 2. Before, its read was scheduled in the cancelled context and
// failed at once: claim 2, holding the task, had no run, and the memo
// named it (the sweep takes such a claim as served). (Found by a review.)
func TestExactlyOnce_cancelled_run_whose_read_after_the_post_failed_continues_for_a_newer_claim(t *testing.T) {
	t.Parallel()
	b, id, err := runCancelled(t, true)
	st := b.task(t, id)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, "w1", st.ClaimedBy)
	require.Equal(t, 2, st.Attempts)
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(err, &can), "claim 2 holds the task: it must get a run; got %v", err)
}

// Local mode (the report a local activity, the read a regular one): the
// same race as TestExactlyOnce_read_after_the_post_fails_once.
func TestExactlyOnce_local_read_after_the_post_fails_once(t *testing.T) {
	t.Parallel()
	var b *testBundle
	r := &readBackRace{ended: true, failRead: true}
	r.b, r.t = &b, t
	b = setup(t, nil, r.middleware)
	in := b.claim(t, "example.error", map[string]any{"message": "old claim"}, workflows.TypeOptions{ActivityOptions: workflows.ActivityOptions{Local: workflows.Bool(true)}})
	in.Claim.ClaimedAt = time.Now().Add(-10 * time.Minute)
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "pending", st.Status)
	require.Equal(t, 2, st.Attempts)
}

// The post of claim 1 lands on claim 2 (w1, a renewal), and by the
// report's read after the post the task is gone (PHP: 200, items []). The
// run's own read finds it gone, and it runs no handler. Before, the report
// answered with no read and no ReadBackFailed, which read as "not over":
// the run continued as new for claim 2 of a deleted task. (Found by a
// review.)
func TestExactlyOnce_task_deleted_before_the_read_after_the_post_runs_no_handler(t *testing.T) {
	t.Parallel()
	r := &readBackRace{ended: true, deleted: true}
	_, _, err := r.run(t)
	var can *workflow.ContinueAsNewError
	require.False(t, errors.As(err, &can), "continued as new for claim 2 of a deleted task whose claim the post ended: %v", err)
}
