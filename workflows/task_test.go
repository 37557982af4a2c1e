package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

type testBundle struct {
	env   *testsuite.TestWorkflowEnvironment
	tm    *devserver.Server
	api   *taskmanager.Client // the test's own (the activities' is acts.TaskManager)
	reg   *activities.Registry
	clock *devserver.Clock
	types map[string]taskmanager.ID
	acts  *activities.Activities
}

// setup starts a dev TaskManager (PHP style) and a test workflow
// environment with the real activities; extra handlers are registered
// before the activities are.
func setup(t *testing.T, extra func(reg *activities.Registry), wrap ...func(http.Handler) http.Handler) *testBundle {
	t.Helper()
	clock := devserver.NewClock(time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC))
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k", Now: clock.Now})
	h := tm.Handler()
	for _, w := range wrap {
		h = w(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	url := srv.URL + "/api"
	api, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: "k", Timeout: 5 * time.Second})
	require.NoError(t, err)

	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	if extra != nil {
		extra(reg)
	}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestWorkflowEnvironment()
	// Like a real workflow without a run timeout: activities may retry for hours.
	env.SetWorkflowRunTimeout(30 * 24 * time.Hour)
	env.SetWorkerOptions(worker.Options{DeadlockDetectionTimeout: time.Minute}) // -race on a loaded machine
	// The testsuite fails a run that waits over 3 s of real time for
	// something to happen by default; these runs make real HTTP calls,
	// under -race on a loaded machine: the timeout only guards against a hang.
	env.SetTestTimeout(5 * time.Minute)
	env.RegisterWorkflowWithOptions(workflows.TaskWorkflow, workflow.RegisterOptions{Name: workflows.TaskWorkflowName})
	acts := &activities.Activities{Registry: reg, TaskManager: api, ProgressInterval: time.Nanosecond}
	acts.RegisterOn(env)

	// The test's own calls get time: a slow machine must not fail a test
	// (the activities' client keeps its timeout: they retry).
	testAPI, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: "k", Timeout: 2 * time.Minute})
	require.NoError(t, err)
	b := &testBundle{env: env, tm: tm, api: testAPI, reg: reg, clock: clock, types: map[string]taskmanager.ID{}, acts: acts}
	for _, name := range append(reg.Names(), "demo.pipeline") {
		r, err := testAPI.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: name, Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
		require.NoError(t, err)
		b.types[name] = r.ID
	}
	return b
}

// claim creates a task and claims it as worker w1, returning the workflow input.
func (b *testBundle) claim(t *testing.T, typ string, params any, opts workflows.TypeOptions) workflows.TaskInput {
	t.Helper()
	ctx := context.Background()
	_, err := b.api.CreateTask(ctx, typ, params)
	require.NoError(t, err)
	task, err := b.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: b.types[typ]})
	require.NoError(t, err)
	return workflows.TaskInput{
		Task:    workflows.Task{ID: string(task.ID), Type: task.Type, Params: task.Params.Raw(), Attempts: int(task.Attempts)},
		Claim:   workflows.Claim{WorkerID: "w1", Attempts: int(task.Attempts)},
		Options: opts.WithDefaults(), // as the bridge resolves them
		// as every bridge since claim_timeout sets it
		ClaimTimeout: workflows.DefaultClaimTimeout,
		ReadOnRetry:  true, // as every bridge since it sets it
	}
}

// reclaim lets the claim time out and has worker w2 claim the task.
func (b *testBundle) reclaim(t *testing.T, typ string) workflows.Claim {
	t.Helper()
	task, err := b.claimAfterTimeout(typ, "w2")
	require.NoError(t, err)
	return workflows.Claim{WorkerID: "w2", Attempts: int(task.Attempts)}
}

// claimAfterTimeout lets the claim time out (TaskManager's clock moves
// past the default claim timeout) and has worker claim a task of typ. It
// needs no *testing.T: a handler may call it.
func (b *testBundle) claimAfterTimeout(typ, worker string) (taskmanager.Task, error) {
	b.clock.Add(301 * time.Second)
	return b.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: worker, TaskTypeID: b.types[typ]})
}

func (b *testBundle) run(in workflows.TaskInput) (workflows.TaskResult, error) {
	b.env.ExecuteWorkflow(workflows.TaskWorkflowName, in)
	_ = b.acts.Idle(context.Background()) // progress is posted in the background
	var res workflows.TaskResult
	err := b.env.GetWorkflowError()
	if b.env.IsWorkflowCompleted() && err == nil {
		err = b.env.GetWorkflowResult(&res)
	}
	return res, err
}

func (b *testBundle) task(t *testing.T, id string) devserver.TaskState {
	t.Helper()
	st, ok := b.tm.Task(id)
	require.True(t, ok)
	return st
}

func requireErrorType(t *testing.T, err error, typ string) *temporal.ApplicationError {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an application error, got %v", err)
	require.Equal(t, typ, appErr.Type(), err.Error())
	return appErr
}

func TestTaskWorkflow_success(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "héllo"}, workflows.TypeOptions{})
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", res.Status)
	require.JSONEq(t, `{"echo":"héllo","length":5}`, string(res.Result))
	st := b.task(t, in.Task.ID)
	require.Equal(t, "completed", st.Status)
	require.JSONEq(t, `{"echo":"héllo","length":5}`, string(st.Result))
	require.Len(t, b.tm.Completions(in.Task.ID), 1)
}

func TestTaskWorkflow_local_activity_mode(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.math.add", map[string]any{"a": 1, "b": "2.5"}, workflows.TypeOptions{ActivityOptions: workflows.ActivityOptions{Local: workflows.Bool(true)}})
	res, err := b.run(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"a":1,"b":2.5,"result":3.5}`, string(res.Result))
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
}

func TestTaskWorkflow_handler_retried_then_succeeds(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.flaky", func(ctx context.Context, p struct{}) (map[string]int, error) {
			if n := calls.Add(1); n < 3 {
				return nil, errors.New("flaky")
			}
			return map[string]int{"calls": int(calls.Load())}, nil
		})
	})
	in := b.claim(t, "test.flaky", map[string]any{"x": 1}, workflows.TypeOptions{})
	res, err := b.run(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"calls":3}`, string(res.Result))
	require.EqualValues(t, 3, calls.Load())
}

func TestTaskWorkflow_permanent_failure_reported_at_once(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.error", map[string]any{"message": "boom"}, workflows.TypeOptions{ActivityOptions: workflows.ActivityOptions{Retry: workflows.RetryOptions{MaximumAttempts: 5}}})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "pending", st.Status, "TaskManager re-queues a failure while attempts remain")
	require.Equal(t, "boom", st.Error)
	comps := b.tm.Completions(in.Task.ID)
	require.Len(t, comps, 1)
	require.False(t, comps[0].Success)
}

func TestTaskWorkflow_invalid_params_fail_without_retry(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.typed", func(ctx context.Context, p struct {
			Count int `json:"count"`
		}) (struct{}, error) {
			calls.Add(1)
			return struct{}{}, nil
		})
	})
	in := b.claim(t, "test.typed", map[string]any{"count": "three"}, workflows.TypeOptions{})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Contains(t, st.Error, `field "count"`)
	require.Zero(t, calls.Load())
}

func TestTaskWorkflow_panic_is_a_failed_attempt(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.panic", func(ctx context.Context, p struct{}) (struct{}, error) {
			calls.Add(1)
			panic("nil map somewhere")
		})
	})
	in := b.claim(t, "test.panic", map[string]any{"x": 1}, workflows.TypeOptions{ActivityOptions: workflows.ActivityOptions{Retry: workflows.RetryOptions{MaximumAttempts: 2}}})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.EqualValues(t, 2, calls.Load())
	require.Contains(t, b.task(t, in.Task.ID).Error, "nil map somewhere")
}

func TestTaskWorkflow_timeout(t *testing.T) {
	t.Parallel()
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.hang", func(ctx context.Context, p struct{}) (struct{}, error) {
			<-ctx.Done()
			return struct{}{}, ctx.Err()
		})
	})
	in := b.claim(t, "test.hang", map[string]any{"x": 1}, workflows.TypeOptions{ActivityOptions: workflows.ActivityOptions{
		StartToCloseTimeout: 200 * time.Millisecond, Retry: workflows.RetryOptions{MaximumAttempts: 1},
	}})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Contains(t, b.task(t, in.Task.ID).Error, "test.hang timed out")
}

func TestTaskWorkflow_completion_retried_through_long_outage(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "outage"}, workflows.TypeOptions{})
	// Nine 503s, each asking to retry in 10 minutes: 90 minutes of outage.
	// (The SDK's test environment caps unlimited retries at 10 attempts; a
	// real server does not: the report's policy has no attempt limit.)
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 503, RetryAfter: 10 * time.Minute, Count: 9})
	start := b.env.Now()
	var finished time.Time
	b.env.SetOnActivityCompletedListener(func(info *activity.Info, _ converter.EncodedValue, err error) {
		if info.ActivityType.Name == activities.ReportActivityName && err == nil {
			finished = b.env.Now()
		}
	})
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", res.Status)
	require.GreaterOrEqual(t, finished.Sub(start), 90*time.Minute)
	require.Len(t, b.tm.Completions(in.Task.ID), 1, "the 503s were answered before the queue saw them")
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
	require.Equal(t, 1, b.tm.Stats().AcceptedCompletions)
}

func TestTaskWorkflow_idempotent_completion_after_lost_answer(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.uppercase", map[string]any{"text": "abc"}, workflows.TypeOptions{})
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 502, After: true, Count: 1})
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", res.Status)
	comps := b.tm.Completions(in.Task.ID)
	require.Len(t, comps, 1, "the retry reads the task first, finds the outcome, and posts nothing")
	require.True(t, comps[0].Accepted)
	require.Equal(t, 1, b.tm.Stats().AcceptedCompletions)
}

func TestTaskWorkflow_claim_moved_before_handler(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "moved"}, workflows.TypeOptions{})
	newClaim := b.reclaim(t, "example.echo")
	b.env.RegisterDelayedCallback(func() { b.env.SignalWorkflow(workflows.ClaimSignalName, newClaim) }, 0)
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "w2", res.WorkerID)
	comps := b.tm.Completions(in.Task.ID)
	require.Len(t, comps, 1)
	require.Equal(t, "w2", comps[0].WorkerID)
	require.True(t, comps[0].Accepted)
}

func TestTaskWorkflow_claim_moved_during_handler(t *testing.T) {
	t.Parallel()
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.slow", func(ctx context.Context, p struct{}) (map[string]bool, error) {
			// While the handler runs, the claim times out and w2 claims the task.
			c := b.reclaim(t, "test.slow")
			b.env.SignalWorkflow(workflows.ClaimSignalName, c)
			return map[string]bool{"ok": true}, nil
		})
	})
	in := b.claim(t, "test.slow", map[string]any{"x": 1}, workflows.TypeOptions{})
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "w2", res.WorkerID)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "completed", st.Status)
	require.Equal(t, 2, st.Attempts)
}

func TestTaskWorkflow_claim_signal_after_403(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "late signal"}, workflows.TypeOptions{})
	newClaim := b.reclaim(t, "example.echo")
	// The new claim reaches the workflow a minute after its report met 403.
	b.env.RegisterDelayedCallback(func() { b.env.SignalWorkflow(workflows.ClaimSignalName, newClaim) }, time.Minute)
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "w2", res.WorkerID)
	comps := b.tm.Completions(in.Task.ID)
	require.Len(t, comps, 1, "the first report read the task, saw w2's claim, and posted nothing")
	require.True(t, comps[0].Accepted)
	require.Equal(t, "w2", comps[0].WorkerID)
}

func TestTaskWorkflow_403_without_new_claim_is_claim_lost(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "lost"}, workflows.TypeOptions{ClaimWait: 10 * time.Minute})
	b.reclaim(t, "example.echo")
	_, err := b.run(in)
	appErr := requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.Contains(t, appErr.Error(), "within 10m0s")
	st := b.task(t, in.Task.ID)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, "w2", st.ClaimedBy)
}

func TestTaskWorkflow_oversized_result_fails_cleanly(t *testing.T) {
	t.Parallel()
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.big", func(ctx context.Context, p struct{}) (map[string]string, error) {
			return map[string]string{"blob": strings.Repeat("x", 70_000)}, nil
		})
		activities.Register(reg, "test.bigerror", func(ctx context.Context, p struct{}) (struct{}, error) {
			return struct{}{}, activities.Permanent(errors.New(strings.Repeat("e", 100_000)))
		})
	})
	in := b.claim(t, "test.big", map[string]any{"x": 1}, workflows.TypeOptions{})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Contains(t, st.Error, "more than the 65535 it can store")
	for _, c := range b.tm.Completions(in.Task.ID) {
		require.NotEqual(t, 500, c.Status)
	}

	b2 := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.bigerror", func(ctx context.Context, p struct{}) (struct{}, error) {
			return struct{}{}, activities.Permanent(errors.New(strings.Repeat("e", 100_000)))
		})
	})
	in2 := b2.claim(t, "test.bigerror", map[string]any{"x": 1}, workflows.TypeOptions{})
	_, err = b2.run(in2)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st2 := b2.task(t, in2.Task.ID)
	require.LessOrEqual(t, len(st2.Error), taskmanager.MaxStoredBytes)
	require.True(t, strings.HasSuffix(st2.Error, "(truncated)"))
}

func TestTaskWorkflow_progress_reported_with_current_claim(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.sleep", map[string]any{"duration": 0.3}, workflows.TypeOptions{})
	res, err := b.run(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"duration":0.3}`, string(res.Result))
	calls := b.tm.ProgressCalls(in.Task.ID)
	require.NotEmpty(t, calls)
	last := calls[len(calls)-1]
	require.Equal(t, 100, last.Progress)
	require.True(t, last.Accepted)
	require.Equal(t, "w1", last.WorkerID)
}

func TestTaskWorkflow_reclaim_after_requeued_failure_continues_as_new(t *testing.T) {
	t.Parallel()
	var b *testBundle
	// As soon as TaskManager re-queues the failure, a bridge claims the task
	// again, and its signal-with-start reaches this run before it closes.
	reclaim := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			if strings.HasSuffix(r.URL.Path, "/complete") {
				task, err := b.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: b.types["example.error"]})
				require.NoError(t, err)
				b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: int(task.Attempts)})
			}
		})
	}
	b = setup(t, nil, reclaim)
	in := b.claim(t, "example.error", map[string]any{"message": "again"}, workflows.TypeOptions{})
	_, err := b.run(in)
	var can *workflow.ContinueAsNewError
	require.ErrorAs(t, err, &can)
	require.Equal(t, workflows.TaskWorkflowName, can.WorkflowType.Name)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, 2, st.Attempts)
}

// A cancel during the claim wait (the report met 403) does not end the
// wait: the new claim reports the outcome. A run started by a bridge
// older than claim_timeout (no ClaimTimeout in its input) ends the wait at
// the cancel, as that bridge's code did, so that its runs replay
// (testdata/history-rel-4c6eca8-cancel-during-claim-wait.json).
func TestTaskWorkflow_cancel_during_claim_wait_keeps_waiting(t *testing.T) {
	t.Parallel()
	for _, old := range []bool{false, true} {
		t.Run(map[bool]string{false: "now", true: "started_before_claim_timeout"}[old], func(t *testing.T) {
			t.Parallel()
			b := setup(t, nil)
			in := b.claim(t, "example.echo", map[string]any{"message": "wait"}, workflows.TypeOptions{ClaimWait: 10 * time.Minute})
			if old {
				in.ClaimTimeout = 0
			}
			newClaim := b.reclaim(t, "example.echo")
			b.env.RegisterDelayedCallback(b.env.CancelWorkflow, time.Minute)
			b.env.RegisterDelayedCallback(func() { b.env.SignalWorkflow(workflows.ClaimSignalName, newClaim) }, 2*time.Minute)
			_, err := b.run(in)
			st := b.task(t, in.Task.ID)
			if old {
				requireErrorType(t, err, activities.ErrTypeClaimLost)
				require.Equal(t, "claimed", st.Status)
				return
			}
			var canceled *temporal.CanceledError
			require.True(t, errors.As(err, &canceled), "the run ends cancelled: %v", err)
			require.Equal(t, "completed", st.Status, "reported with the new claim all the same")
			require.Equal(t, "w2", b.tm.Completions(in.Task.ID)[0].WorkerID)
		})
	}
}
