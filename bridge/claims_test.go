package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/serviceerror"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// Tests of the claim bookkeeping: a real dev TaskManager, a fake Temporal
// (faketemporal_test.go) that loses answers and goes away on request.

// 5. A start Temporal will never accept (InvalidArgument, an input over its
// payload limit) fails the task in TaskManager with a clear message and
// frees its pending-start place: before, four such tasks held all four
// places and the bridge stopped claiming anything.
func TestClaims_permanent_start_errors_fail_the_task_and_free_the_place(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.temporal.refuse = func(in workflows.TaskInput) error {
		var p map[string]any
		_ = json.Unmarshal(in.Task.Params, &p)
		if p["bad"] == "invalid" {
			return serviceerror.NewInvalidArgument("some field is invalid")
		}
		return nil
	}
	var bad []string
	for i := range 3 {
		bad = append(bad, bb.create(t, "example.echo", map[string]any{"message": fmt.Sprint(i), "bad": "invalid"}))
		bad = append(bad, bb.create(t, "example.uppercase", map[string]any{"text": fmt.Sprint(i), "bad": "invalid"}))
	}
	huge := bb.create(t, "example.echo", map[string]any{"message": strings.Repeat("7", MaxStartBytes)})
	bad = append(bad, huge)
	deep := bb.create(t, "example.echo", json.RawMessage(`{"message":"deep","n":`+strings.Repeat("[", MaxParamsDepth)+strings.Repeat("]", MaxParamsDepth)+`}`))
	bad = append(bad, deep)
	good := bb.create(t, "example.math.add", map[string]any{"a": 1, "b": 2})
	bb.serve(t)

	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+good)) == 1 }, eventually, 5*time.Millisecond, "the good task starts")
	require.Eventually(t, func() bool {
		for _, id := range bad {
			if bb.status(t, id).Status != "failed" {
				return false
			}
		}
		return true
	}, eventually, 5*time.Millisecond, "every task that cannot start ends failed (after TaskManager's attempts)")
	for _, id := range bad {
		require.Contains(t, bb.status(t, id).Error, "could not start a Temporal workflow for this task")
	}
	require.Contains(t, bb.status(t, huge).Error, "over the 2000000 bytes Temporal accepts")
	require.Contains(t, bb.status(t, deep).Error, "its params nest 101 levels deep, over the 100 accepted")
}

// A start refused for want of permission is the fault of the bridge's
// Temporal credentials, the same for every task: the task keeps its claim
// and its start is retried until the credentials are fixed. Before, each
// such task was failed in TaskManager, re-queued, claimed and failed
// again: wrong credentials failed the whole queue.
func TestClaims_permission_denied_keeps_the_claim_and_retries(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	var denied atomic.Bool
	var refused atomic.Int64
	denied.Store(true)
	bb.temporal.refuse = func(workflows.TaskInput) error {
		if denied.Load() {
			refused.Add(1)
			return serviceerror.NewPermissionDenied("Request unauthorized.", "")
		}
		return nil
	}
	ids := []string{
		bb.create(t, "example.echo", map[string]any{"message": "a"}),
		bb.create(t, "example.uppercase", map[string]any{"text": "b"}),
	}
	bb.serve(t)
	require.Eventually(t, func() bool { return refused.Load() >= 2*int64(len(ids)) }, eventually, 5*time.Millisecond, "each start refused, then retried")
	for _, id := range ids {
		st := bb.status(t, id)
		require.Equal(t, "claimed", st.Status, "the task keeps its claim")
		require.EqualValues(t, 1, st.Attempts)
	}
	denied.Store(false) // the credentials are fixed
	for _, id := range ids {
		require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond, "the start goes through")
		st := bb.status(t, id)
		require.Equal(t, "claimed", st.Status)
		require.EqualValues(t, 1, st.Attempts, "on its first claim")
	}
}

// A namespace that lost the TaskType and TaskID search attributes after
// the bridge started refuses every start that sets them: the bridge starts
// its runs without them, and no task is failed for it.
func TestClaims_search_attributes_gone_starts_without_them(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.b.searchAttrs.Store(true)
	bb.temporal.noSearchAttributes = true
	id := bb.create(t, "example.echo", map[string]any{"message": "a"})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond, "the run starts without them")
	require.False(t, bb.b.searchAttrs.Load())
	st := bb.status(t, id)
	require.Equal(t, "claimed", st.Status)
	require.EqualValues(t, 1, st.Attempts)
}

// The SDK stops the worker for good (its namespace gone): the bridge is no
// longer ready, stops claiming and serve returns the error, so that the
// process exits and is restarted. Before, it claimed on while no worker
// ran the tasks, and /readyz said ok.
func TestServe_worker_stopped_for_good_ends_claiming(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.b.polling.Store(true)
	done := make(chan error, 1)
	go func() { done <- bb.b.serve(context.Background()) }()
	id := bb.create(t, "example.echo", map[string]any{"message": "before"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	bb.b.workerFailed(serviceerror.NewNamespaceNotFound("default"))
	select {
	case err := <-done:
		require.ErrorContains(t, err, "Temporal worker stopped")
		require.ErrorIs(t, err, ErrWorkerStopped)
		var nf *serviceerror.NamespaceNotFound
		require.ErrorAs(t, err, &nf)
	case <-time.After(eventually):
		t.Fatal("serve goes on claiming after the worker stopped")
	}
	require.False(t, bb.b.polling.Load(), "not ready")
	after := bb.create(t, "example.echo", map[string]any{"message": "after"})
	time.Sleep(100 * time.Millisecond) // five poll intervals
	require.Equal(t, "pending", bb.status(t, after).Status, "nothing claimed once it stopped")
	bb.b.bgCancel()
	bb.b.starts.Wait()
}

// A slow TaskManager read while a start is retried times out: that is no
// sign that Temporal is unreachable, and claiming is not paused for it.
func TestClaimHolds_TaskManager_timeout_is_not_Temporal_unreachable(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	id := bb.create(t, "example.echo", map[string]any{"message": "slow"})
	task, err := bb.api.GetTask(context.Background(), taskmanager.ID(id))
	require.NoError(t, err)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: http.MethodGet, Latency: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = bb.b.claimHolds(ctx, task)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, temporalUnreachable(err), "a TaskManager timeout")
	require.True(t, temporalUnreachable(serviceerror.NewUnavailable("down")))
}

// A claim under way when claiming stops may go on for claimStopGrace, no
// longer: a TaskManager that answers in minutes (api_timeout allows ten)
// cannot hold the stop past StopTimeout. Not parallel: it sets the grace.
func TestServe_stop_cuts_a_slow_claim_off(t *testing.T) {
	defer func(g time.Duration) { claimStopGrace = g }(claimStopGrace)
	claimStopGrace = 100 * time.Millisecond
	bb := setupBridge(t, devserver.StylePHP, nil)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: bb.b.cfg.APIURL, APIKey: "k", Timeout: 10 * time.Minute})
	require.NoError(t, err)
	bb.b.api = api
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Latency: time.Minute})
	bb.create(t, "example.echo", map[string]any{"message": "slow"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bb.b.serve(ctx) }()
	claiming := func() bool { // a claim call is under way
		bb.b.calls.mu.Lock()
		defer bb.b.calls.mu.Unlock()
		return len(bb.b.calls.open) > 0
	}
	require.Eventually(t, func() bool { return bb.b.adm.inFlight() >= 1 && claiming() }, eventually, 5*time.Millisecond, "a claim is under way (the scout may start another: the task stays pending until the slow claim is served)")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(eventually):
		t.Fatal("a claim under way held the stop")
	}
	bb.b.bgCancel()
	bb.b.starts.Wait()
}

// Stop called before Run reached its claim loops (an embedder stopping at
// once): nothing is claimed. Before, Run went on and claimed tasks it
// could no longer start.
func TestServe_stop_before_serve_claims_nothing(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	id := bb.create(t, "example.echo", map[string]any{"message": "never"})
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	bb.b.mu.Lock()
	bb.b.stopped = true // what Stop does first (the bundle has no worker to stop)
	bb.b.mu.Unlock()
	require.NoError(t, bb.b.serve(ctx))
	require.NoError(t, ctx.Err(), "serve returned at once")
	require.Equal(t, "pending", bb.status(t, id).Status, "nothing claimed")
	require.Zero(t, bb.tm.Stats().ClaimCalls)
}

func TestJSONDepth(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]int{
		`1`: 0, `"[[["`: 0, `{}`: 1, `{"a":[1,{"b":[]}]}`: 4, `["\"[", "\\", [[]]]`: 3, `[{"x]}":"{\"}"}]`: 2,
	} {
		require.Equal(t, want, jsonDepth([]byte(raw)), raw)
	}
}

// 8. A start whose answer was lost after Temporal created the run, when that
// run already closed (a fast local handler): the retry must find the run of
// this claim, not start a second one.
func TestClaims_ambiguous_start_does_not_start_a_second_run(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.temporal.loseStartAnswers = 1
	bb.temporal.closeOnStart = true
	id := bb.create(t, "example.echo", map[string]any{"message": "once"})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.b.adm.claimed() == 1 && bb.b.adm.inFlight() == 0 }, eventually, 5*time.Millisecond)
	require.Len(t, bb.temporal.snapshot("task-"+id), 1, "one run for one claim")
}

// 6. While Temporal is unreachable, a watched run's wait fails: its slot
// must stay taken until Temporal says the run closed.
func TestClaims_outage_keeps_open_runs_counted(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxInFlight = 2 })
	a := bb.create(t, "example.echo", map[string]any{"message": "a"})
	c := bb.create(t, "example.echo", map[string]any{"message": "c"})
	bb.serve(t)
	// Both runs started (a start still under way counts in flight too).
	require.Eventually(t, func() bool {
		return bb.b.adm.inFlight() == 2 && len(bb.temporal.snapshot("task-"+a)) == 1 && len(bb.temporal.snapshot("task-"+c)) == 1
	}, eventually, 5*time.Millisecond)

	bb.temporal.setDown(true)
	for i := range 4 {
		bb.create(t, "example.echo", map[string]any{"message": fmt.Sprint("more ", i)})
	}
	time.Sleep(300 * time.Millisecond) // the watches' waits fail meanwhile
	bb.temporal.setDown(false)
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, 2, bb.temporal.runCount(), "nothing more is started while both runs are open")
	require.Equal(t, 2, bb.b.adm.inFlight())
	claimed := 0
	for _, st := range bb.tm.Tasks() {
		if st.Status == "claimed" {
			claimed++
		}
	}
	require.Equal(t, 2, claimed, "nothing more is claimed")

	bb.temporal.close("task-" + a)
	require.Eventually(t, func() bool { return bb.temporal.runCount() == 3 }, eventually, 5*time.Millisecond, "a closed run frees one slot")
}

// 9a. A claim whose workflow was not yet started when the process died is
// found by the next start of the same worker id and started.
func TestClaims_claims_left_by_a_crash_are_started(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	var ids []string
	for i := range 4 {
		ids = append(ids, bb.create(t, "example.echo", map[string]any{"message": fmt.Sprint(i)}))
		// the process that died claimed it
		_, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[0].ID})
		require.NoError(t, err)
	}
	bb.serve(t)
	for _, id := range ids {
		require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
		run := bb.temporal.snapshot("task-" + id)[0]
		require.Equal(t, workflows.Claim{WorkerID: "w1", Attempts: 1}, run.input.Claim)
	}
	for _, id := range ids {
		require.Equal(t, 1, bb.status(t, id).Attempts, "no claim was spent again")
	}
}

// 9b. A claim whose answer was lost or could not be decoded: the server
// claimed the task but the bridge never saw it. A sweep finds it at once.
func TestClaims_claim_with_a_garbled_answer_is_found(t *testing.T) {
	t.Parallel()
	// One in flight: one claim call at a time, so the garbled answer is
	// the one that claimed the task.
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxInFlight = 1 })
	bb.only("example.echo") // the garbled answer is this type's claim
	id := bb.create(t, "example.echo", map[string]any{"message": "garbled"})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 200, After: true, Count: 1, Body: `{"success":true,"data":{"id":`})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	st := bb.status(t, id)
	require.Equal(t, 1, st.Attempts, "started for the claim the garbled answer made, not claimed again")
}

// 9c. A task of ours that the bridge cannot read at all is failed with a
// clear message, never dropped nor claimed again forever.
func TestClaims_unreadable_claimed_task_is_failed(t *testing.T) {
	t.Parallel()
	// One attempt: the failure is final, so no later claim of the task
	// (the scout would see it pending again) races the assertions. One in
	// flight: one claim call at a time, so the garbled answer is the one
	// that claimed the task (with two under way, the other could claim it
	// first and the garbled one come back empty).
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, MaxAttempts: 1}, func(c *Config) { c.MaxInFlight = 1 })
	bb.only("example.echo") // the garbled answer is this type's claim
	id := bb.create(t, "example.echo", map[string]any{"message": "unreadable"})
	bb.unreadable(id)
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.tm.Completions(id)) > 0 }, eventually, 5*time.Millisecond)
	first := bb.tm.Completions(id)[0]
	require.True(t, first.Accepted && !first.Success, "failed in TaskManager")
	require.Contains(t, first.Error, "cannot read this task from TaskManager")
	require.Zero(t, bb.temporal.runCount(), "no run for a task the bridge cannot read")
}

// A task the bridge cannot read whose failure's answer is lost (a 502
// after the write): the failing ends (the sweep looks at the task again),
// and its place comes back. Before, every retry read first, could not,
// and retried until the bridge stopped, holding the task's max_in_flight
// slot.
func TestClaims_unreadable_task_whose_failure_answer_is_lost_frees_its_place(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, MaxAttempts: 1}, func(c *Config) { c.MaxInFlight = 1 })
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "unreadable"})
	bb.unreadable(id)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id + "/complete", Method: "POST", Status: http.StatusBadGateway, After: true, Count: 1})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.tm.Completions(id)) > 0 }, eventually, 5*time.Millisecond)
	require.True(t, bb.tm.Completions(id)[0].Accepted, "the failure landed")
	other := bb.create(t, "example.echo", map[string]any{"message": "next"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+other)) == 1 }, eventually, 5*time.Millisecond,
		"the unreadable task's place comes back: the next task is claimed and started")
	require.Equal(t, "failed", bb.status(t, id).Status)
}

// The failure of a task the bridge cannot read lands, but its answer is
// lost; TaskManager re-queues the task (attempts left) and this bridge
// claims it again and runs it. The failure is not posted again: that post,
// blind, would end the newer claim whose run is open (TaskManager checks
// the worker id, not the attempt). Found by a review of the first fix,
// which retried the post.
func TestClaims_unreadable_task_failure_is_not_posted_again_onto_a_newer_claim(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, MaxAttempts: 3}, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "unreadable"})
	bb.unreadable(id)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id + "/complete", Method: "POST", Status: http.StatusBadGateway, After: true, Count: 1})
	bb.serve(t)
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && bb.b.adm.inFlight() == 1
	}, eventually, 5*time.Millisecond, "attempt 2 runs, and the failing of attempt 1 ended")
	require.Equal(t, 2, bb.temporal.snapshot("task-" + id)[0].input.Claim.Attempts)
	cs := bb.tm.Completions(id)
	require.Len(t, cs, 1, "posted once")
	require.Equal(t, 1, cs[0].AttemptsBefore)
	st := bb.status(t, id)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, 2, int(st.Attempts))
}

// A claim of this worker (its answer lost, or a process that died) whose
// task row has a field of an odd kind, in every listing and in its read:
// the listings still list it (by its id, type and claim), the sweep finds
// the claim and fails the task, and the next task is claimed. Before,
// every listing that held the row failed: the sweep never found the
// claim, and the task stayed claimed.
func TestClaims_task_row_with_an_odd_field_is_failed_not_left_claimed(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, MaxAttempts: 1}, func(c *Config) { c.MaxInFlight = 1 })
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "odd"})
	_, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[0].ID})
	require.NoError(t, err)
	row := `{"id":` + id + `,"type":"example.echo","status":"claimed","claimed_by":"w1","attempts":1,"params":{"message":"odd"},"priority":"high"}`
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks", Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[` + row + `]}}`})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[` + row + `]}}`})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.tm.Completions(id)) > 0 }, eventually, 5*time.Millisecond)
	first := bb.tm.Completions(id)[0]
	require.True(t, first.Accepted && !first.Success, "failed in TaskManager")
	require.Contains(t, first.Error, "cannot read this task from TaskManager")
	other := bb.create(t, "example.echo", map[string]any{"message": "next"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+other)) == 1 }, eventually, 5*time.Millisecond, "its place came back")
}

// A timestamp TaskManager sends as a Unix number does not make a task
// unreadable (the bridge only shows it): a claim of this worker with such
// rows is found by the sweep and run. Before, no listing or read of it
// could be decoded, and the task stayed claimed.
func TestClaims_unix_timestamps_are_read(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "unix"})
	_, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[0].ID})
	require.NoError(t, err)
	row := `{"id":` + id + `,"type":"example.echo","status":"claimed","claimed_by":"w1","attempts":1,"params":{"message":"unix"},"created_at":1700000000,"claimed_at":1700000001}`
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks", Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[` + row + `]}}`})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[` + row + `]}}`})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	run := bb.temporal.snapshot("task-" + id)[0]
	require.Equal(t, "w1", run.input.Claim.WorkerID)
	require.Equal(t, 1, run.input.Claim.Attempts)
	require.Empty(t, bb.tm.Completions(id))
}

// A claim's answer that names another task type than the one claimed (a
// broken server): the task runs as the type claimed, whose handler runs,
// and is that type's in the memo and the metrics. Before, the answer's
// type went to the memo, the search attribute, the summary and the
// metric labels (any string a server sent), beside the claimed type's
// handler.
func TestClaims_answer_naming_another_type_runs_as_the_type_claimed(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "m"})
	row := `{"id":` + id + `,"type":"not.this.type","status":"claimed","claimed_by":"w1","attempts":1,"params":{"message":"m"}}`
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 200, After: true, Count: 1, Body: `{"success":true,"data":` + row + `}`})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	run := bb.temporal.snapshot("task-" + id)[0]
	require.Equal(t, "example.echo", run.input.Task.Type)
	require.Equal(t, "example.echo", run.memo[workflows.MemoTaskType])
}

// 10. --max-runs counts claims: a loop whose type is empty while others
// hold reservations waits instead of ending, and the bridge ends once
// max_runs tasks were claimed and their runs closed.
func TestClaims_max_runs_claims_every_type_and_ends(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxRuns = 2 })
	bb.temporal.closeOnStart = true
	a := bb.create(t, "example.uppercase", map[string]any{"text": "a"})
	b := bb.create(t, "example.uppercase", map[string]any{"text": "b"})
	bb.create(t, "example.uppercase", map[string]any{"text": "not this one"})
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	require.NoError(t, bb.b.serve(ctx))
	require.NoError(t, ctx.Err(), "serve returned because max_runs were done, not because the test gave up")
	require.Equal(t, 2, bb.b.adm.claimed())
	require.Len(t, bb.temporal.snapshot("task-"+a), 1)
	require.Len(t, bb.temporal.snapshot("task-"+b), 1)
}

// A claim whose answer was lost counts against --max-runs when the sweep
// finds that it landed: its run is one of max_runs, not one more.
func TestClaims_max_runs_counts_a_claim_found_by_the_sweep(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxRuns = 1; c.APITimeout = 100 * time.Millisecond })
	bb.only("example.echo")
	bb.temporal.closeOnStart = true
	first := bb.create(t, "example.echo", map[string]any{"message": "claimed, answer lost"})
	second := bb.create(t, "example.echo", map[string]any{"message": "not this one"})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: http.StatusBadGateway, After: true, Count: 1})
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	require.NoError(t, bb.b.serve(ctx))
	require.NoError(t, ctx.Err(), "serve returned because max_runs were done, not because the test gave up")
	require.Len(t, bb.temporal.snapshot("task-"+first), 1, "the claim found by the sweep ran")
	require.Empty(t, bb.temporal.snapshot("task-"+second), "max_runs is 1")
	require.Equal(t, "pending", bb.status(t, second).Status)
}

// 12. A task running longer than the claim timeout is claimed again; that
// claim only signals the open run and takes no second slot.
func TestClaims_reclaim_of_a_long_task_takes_no_second_slot(t *testing.T) {
	t.Parallel()
	clock := devserver.NewClock(time.Now())
	bb := setupBridgeClock(t, clock, func(c *Config) { c.MaxInFlight = 2 })
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.b.adm.inFlight() == 1 && len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	clock.Add(301 * time.Second)        // the claim times out; this bridge claims it again
	bb.b.scout.wake("example.sleep", 1) // as renewAt does once the claim timeout passed
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) == 1
	}, eventually, 5*time.Millisecond, "the new claim is signalled to the open run")
	require.Equal(t, 1, bb.b.adm.openRuns(), "one task, one run counted")
	other := bb.create(t, "example.echo", map[string]any{"message": "fits"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+other)) == 1 }, eventually, 5*time.Millisecond, "the second slot is free")
}

// A task running longer than TaskManager's claim timeout is claimed again
// by this bridge, on its own (renewAt), against PHP that stores claimed_at
// in whole seconds: the new claim reaches the open run. Before, the one
// wake came 100 ms after the timeout, most often before PHP hands the task
// out again, and there was no second: another worker could take it.
func TestClaims_long_task_is_renewed_against_whole_second_claims(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) { c.ClaimTimeout = time.Second })
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	bb.serve(t)
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) >= 2
	}, eventually, 5*time.Millisecond, "the claim is renewed, and the renewal renewed")
	require.Len(t, bb.temporal.snapshot("task-"+id), 1, "one run")
	st := bb.status(t, id)
	require.Equal(t, "w1", st.ClaimedBy)
	for _, c := range bb.tm.Claims() {
		require.Equal(t, "w1", c.WorkerID)
	}
}

// A task whose params are over a bound (added after its run started, or
// the run of an earlier claim) is not failed while its run is open: the
// claim is signalled to that run.
func TestClaims_unstartable_task_with_an_open_run_gets_the_claim(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	deep := json.RawMessage(`{"message":"deep","n":` + strings.Repeat("[", MaxParamsDepth+1) + strings.Repeat("]", MaxParamsDepth+1) + `}`)
	id := bb.create(t, "example.echo", deep)
	bb.temporal.openRun("task-" + id)
	bb.serve(t)
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) == 1
	}, eventually, 5*time.Millisecond, "the open run gets the claim")
	require.Equal(t, "claimed", bb.status(t, id).Status, "not failed")
	// Counted once its start ends, after the signal.
	require.Eventually(t, func() bool { return bb.b.adm.openRuns() == 1 }, eventually, 5*time.Millisecond)
}

// Found by the fault simulation (seed 1): the report that fails a task
// that cannot start met a refused message ("Data too long") and gave up,
// leaving the task claimed and uncounted. It now shortens the message.
func TestClaims_failing_an_unstartable_task_survives_a_refused_message(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": strings.Repeat("7", MaxStartBytes)})
	bb.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 500, Count: 1,
		Body: `{"success":false,"error":"SQLSTATE[22001]: String data, right truncated: 1406 Data too long for column 'error_message' at row 1"}`})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.status(t, id).Status == "failed" }, eventually, 5*time.Millisecond)
	require.Contains(t, bb.status(t, id).Error, "could not start a Temporal workflow")
}

// A claim call that hangs (a slow TaskManager: up to api_timeout) holds up
// neither the sweep's listing nor the claims of other types. Before, a
// sweep waited for every claim call under way before it listed, and every
// new claim waited behind the sweep (a waiting writer of an RWMutex): one
// type's hanging claim stalled all claiming, again at each sweep. (Found
// by a review.)
func TestClaims_hanging_claim_holds_up_neither_the_sweep_nor_other_types(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.APITimeout = time.Minute })
	bb.temporal.closeOnStart = true
	bb.only("example.echo", "example.uppercase")
	slow := bb.b.types[slices.IndexFunc(bb.b.types, func(t servedType) bool { return t.Name == "example.echo" })].ID
	release, hanging := make(chan struct{}), make(chan struct{}, 1)
	var listings atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/tasks/claim") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req struct {
				TypeID taskmanager.ID `json:"task_type_id"`
			}
			if json.Unmarshal(body, &req) == nil && req.TypeID == slow {
				select {
				case hanging <- struct{}{}:
				default:
				}
				<-release
			}
		}
		if r.Method == http.MethodGet && r.URL.Query().Get("status") == "claimed" {
			listings.Add(1)
		}
		bb.tm.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	base, err := url.Parse(bb.b.cfg.APIURL)
	require.NoError(t, err)
	bb.b.api, err = taskmanager.New(taskmanager.Options{BaseURL: srv.URL + base.Path, APIKey: "k", Timeout: time.Minute})
	require.NoError(t, err)

	echo := bb.create(t, "example.echo", map[string]any{"message": "slow"})
	bb.serve(t)
	select {
	case <-hanging:
	case <-time.After(eventually): // a guard against a hang, not a timing assertion
		t.Fatal("the claim of example.echo never came")
	}
	before := listings.Load()
	bb.b.requestSweep()
	require.Eventually(t, func() bool { return listings.Load() > before }, eventually, 5*time.Millisecond, "a sweep lists while a claim hangs")
	upper := bb.create(t, "example.uppercase", map[string]any{"text": "fast"})
	require.Eventually(t, func() bool { return bb.status(t, upper).Status != "pending" }, eventually, 5*time.Millisecond, "another type claims while a claim hangs")
	require.Equal(t, "pending", bb.status(t, echo).Status, "still hanging")

	close(release)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+echo)) == 1 }, eventually, 5*time.Millisecond, "the hanging claim's task is started")
	bb.b.requestSweep()
	require.Eventually(t, func() bool { return listings.Load() > before+1 }, eventually, 5*time.Millisecond)
	require.Len(t, bb.temporal.snapshot("task-"+echo), 1, "started once")
}

// A claim whose answer was lost holds its place until a sweep has looked;
// when listing this worker's claims keeps failing, it comes back once the
// claim, if it was made, has timed out in TaskManager. Before, every lost
// answer took a place for good while the listing failed, until the bridge
// claimed nothing. (Found by a review.)
func TestClaims_place_of_a_lost_answer_comes_back_after_the_claim_timeout_while_sweeps_fail(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) {
		c.MaxInFlight = 2
		c.ClaimTimeout = time.Second
		c.APITimeout = 100 * time.Millisecond
	})
	bb.only("example.echo")
	bb.serve(t)
	// A run that stays open takes one place; once it started, the first
	// sweep has worked. From now on every listing fails.
	first := bb.create(t, "example.echo", map[string]any{"message": "first"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+first)) == 1 }, eventually, 5*time.Millisecond)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks", Method: http.MethodGet, Query: "status=claimed", Status: http.StatusInternalServerError})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 200, After: true, Count: 1, Body: `{"success":true,"data":{"id":`})
	lost := bb.create(t, "example.echo", map[string]any{"message": "answer lost"})
	require.Eventually(t, func() bool { return bb.status(t, lost).Status == "claimed" }, eventually, 5*time.Millisecond)
	next := bb.create(t, "example.echo", map[string]any{"message": "next"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+next)) == 1 }, eventually, 5*time.Millisecond,
		"the last place stayed held for a sweep that never came")
	require.Empty(t, bb.temporal.snapshot("task-"+lost), "no sweep found it: nothing started it")
}

// The failure of a task that cannot start, posted once its claim may have
// timed out, reads the task first: TaskManager may have handed the task
// out again to this same worker id, whose newer claim a blind post would
// end (complete checks only the worker id). Found by the simulation (seed
// 267): a start held up by Temporal's restart failed 6 s after its claim
// (claim timeout 3 s), and its failure landed on the next claim.
func TestFailTask_of_an_old_claim_leaves_a_newer_claim_of_this_worker(t *testing.T) {
	t.Parallel()
	clock := devserver.NewClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	bb := setupBridgeClock(t, clock, nil)
	id := bb.create(t, "example.echo", map[string]any{"message": "huge"})
	tt, err := bb.api.GetTaskType(context.Background(), "example.echo")
	require.NoError(t, err)
	first, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: tt.ID})
	require.NoError(t, err)
	clock.Add(10 * time.Minute) // the claim times out; w1 claims the task again
	second, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: tt.ID})
	require.NoError(t, err)
	require.Equal(t, 2, int(second.Attempts))

	sent := time.Now().Add(-10 * time.Minute) // when the first claim was sent
	bb.b.failTask(bb.b.adm.adopt("task-"+id), first, sent, "cannot start", true)
	bb.b.starts.Wait()
	st := bb.status(t, id)
	require.Equal(t, "claimed", st.Status, "the first claim's failure ended the second claim: %+v", st)
	require.Equal(t, 2, st.Attempts)

	// A fresh claim's failure is posted at once.
	bb.b.failTask(bb.b.adm.adopt("task-"+id), second, time.Now(), "cannot start", true)
	bb.b.starts.Wait()
	require.Equal(t, "pending", bb.status(t, id).Status)
}
