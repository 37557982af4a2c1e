package workflows_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// countingSetup is setup with test.count, a handler that counts its runs.
func countingSetup(t *testing.T, wrap ...func(http.Handler) http.Handler) (*testBundle, *atomic.Int32) {
	var n atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		reg.MustAdd("test.count", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
			n.Add(1)
			return json.RawMessage(`{}`), nil
		}))
	}, wrap...)
	return b, &n
}

// A late run whose claim moved to w2 (signalled before its first
// workflow task) takes it while it reads: its handler runs once, and the
// outcome is reported with w2.
func TestLateStart_claim_moved_before_the_start(t *testing.T) {
	t.Parallel()
	b, n := countingSetup(t)
	in := b.claim(t, "test.count", map[string]any{"n": 1}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now().Add(-10 * time.Minute)
	c2 := b.reclaim(t, "test.count")
	c2.ClaimedAt = b.env.Now().Add(-1 * time.Second)
	b.env.RegisterDelayedCallback(func() { b.env.SignalWorkflow(workflows.ClaimSignalName, c2) }, 0)
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "w2", res.WorkerID)
	require.EqualValues(t, 1, n.Load())
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
}

// A late run of a local handler whose claim holds: the handler runs once.
func TestLateStart_local_claim_holds(t *testing.T) {
	t.Parallel()
	b, n := countingSetup(t)
	in := b.claim(t, "test.count", map[string]any{"n": 1}, workflows.TypeOptions{ActivityOptions: workflows.ActivityOptions{Local: workflows.Bool(true)}}.WithDefaults())
	in.Claim.ClaimedAt = b.env.Now().Add(-10 * time.Minute)
	_, err := b.run(in)
	require.NoError(t, err)
	require.EqualValues(t, 1, n.Load())
	require.Len(t, b.tm.Completions(in.Task.ID), 1)
}

// A late run of a multi-step type whose claim holds completes.
func TestLateStart_steps_claim_holds(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "demo.pipeline", map[string]any{"text": "hi there"}, workflows.TypeOptions{Steps: demoPipeline()})
	in.Claim.ClaimedAt = b.env.Now().Add(-10 * time.Minute)
	_, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
}

// A late run cancelled before its read, whose claim holds: no handler
// runs, and the cancel is reported once (as for a cancel at start).
func TestLateStart_cancelled_claim_holds(t *testing.T) {
	t.Parallel()
	b, n := countingSetup(t)
	in := b.claim(t, "test.count", map[string]any{"n": 1}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now().Add(-10 * time.Minute)
	b.env.RegisterDelayedCallback(b.env.CancelWorkflow, 0)
	_, err := b.run(in)
	require.Error(t, err)
	require.Zero(t, n.Load(), "no handler ran")
	require.Len(t, b.tm.Completions(in.Task.ID), 1, "the cancel is reported once")
}

// A late run cancelled before its read, whose claim is over: nothing is
// reported.
func TestLateStart_cancelled_claim_over(t *testing.T) {
	t.Parallel()
	b, n := countingSetup(t)
	in := b.claim(t, "test.count", map[string]any{"n": 1}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now().Add(-10 * time.Minute)
	b.reclaim(t, "test.count")
	b.env.RegisterDelayedCallback(b.env.CancelWorkflow, 0)
	_, err := b.run(in)
	requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.Zero(t, n.Load())
	require.Empty(t, b.tm.Completions(in.Task.ID))
	require.Equal(t, taskmanager.StatusClaimed, b.task(t, in.Task.ID).Status, "the newer claim holds the task")
}

// A late run whose read is given up on (its retries capped: Temporal's
// test environment caps "unlimited" ones at 10) does not take its claim
// for over: only a task gone from TaskManager is. The handler runs, as it
// would have before the read. (Found by a review: any error counted as
// gone, and the run ended ClaimLost with its claim live.)
func TestLateStart_read_given_up_on_is_not_a_claim_over(t *testing.T) {
	t.Parallel()
	garble := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/tasks/") {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"success":true,"data":{"id":1,"attempts":"many"}}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	b, n := countingSetup(t, garble)
	in := b.claim(t, "test.count", map[string]any{"n": 1}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now().Add(-10 * time.Minute)
	_, err := b.run(in)
	require.False(t, activities.HasErrorType(err, activities.ErrTypeClaimLost), "%v", err)
	require.EqualValues(t, 1, n.Load(), "the handler ran")
}

// A run that starts late (Temporal slow or away: its claim, made at a
// known time, older than half the claim timeout) reads the task before
// its handler. Here the claim timed out and this same worker claimed the
// task again before the start: the run runs no handler and posts nothing
// (the newer claim's own start gives it a run). Before, the handler ran
// for the ended claim (found by the fault simulation, seed 267: a start
// that Temporal's restarts held for 8 s, while another worker claimed the
// task, ran it and failed it for good).
func TestExactlyOnce_late_start_of_a_replaced_claim_runs_no_handler(t *testing.T) {
	t.Parallel()
	b, handled := countingSetup(t)
	in := b.claim(t, "test.count", map[string]any{"n": 1}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now().Add(-10 * time.Minute)
	// the claim times out; this same worker claims the task again
	_, err := b.claimAfterTimeout("test.count", "w1")
	require.NoError(t, err)

	_, err = b.run(in)
	requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.Zero(t, handled.Load(), "no handler ran for the ended claim")
	require.Empty(t, b.tm.Completions(in.Task.ID))
	st := b.task(t, in.Task.ID)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, 2, st.Attempts)
}

// A late start whose claim still holds the task runs its handler.
func TestExactlyOnce_late_start_of_a_claim_that_holds_runs_the_handler(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "late"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now().Add(-10 * time.Minute)
	_, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
}
