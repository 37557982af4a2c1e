package activities_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// claimed creates and claims one task of typ as w1.
func claimed(t *testing.T, api *taskmanager.Client, typ string, params any) taskmanager.Task {
	t.Helper()
	ctx := context.Background()
	r, err := api.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: typ, Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	_, err = api.CreateTask(ctx, typ, params)
	require.NoError(t, err)
	task, err := api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: r.ID})
	require.NoError(t, err)
	return task
}

// A local handler run again after a bridge died mid-workflow-task, once its
// outcome was reported, returns that outcome and does not run.
func TestHandler_skip_if_done_returns_the_recorded_outcome(t *testing.T) {
	t.Parallel()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k"})
	require.NoError(t, err)
	var runs atomic.Int32
	reg := activities.NewRegistry()
	activities.Register(reg, "test.count", func(ctx context.Context, p struct{}) (map[string]int, error) {
		return map[string]int{"run": int(runs.Add(1))}, nil
	})
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	(&activities.Activities{Registry: reg, TaskManager: api}).RegisterOn(env)

	task := claimed(t, api, "test.count", map[string]any{"x": 1})
	in := activities.HandlerInput{TaskID: string(task.ID), TaskType: "test.count", WorkerID: "w1", Attempt: 1, Params: task.Params.Raw(), SkipIfDone: true}
	val, err := env.ExecuteActivity("test.count", in)
	require.NoError(t, err, "still claimed: the handler runs")
	var out json.RawMessage
	require.NoError(t, val.Get(&out))
	_, err = api.Complete(context.Background(), task.ID, taskmanager.Completion{WorkerID: "w1", Success: true, Result: out})
	require.NoError(t, err)

	val, err = env.ExecuteActivity("test.count", in)
	require.NoError(t, err)
	var again json.RawMessage
	require.NoError(t, val.Get(&again))
	require.JSONEq(t, string(out), string(again), "the recorded result")
	require.EqualValues(t, 1, runs.Load(), "the handler did not run again")
}

// The report rule: a report that may have landed reads first and posts
// nothing when the task holds the outcome; it never posts for another claim.
func TestReport_reads_first_and_posts_only_for_the_claim_that_holds_the_task(t *testing.T) {
	t.Parallel()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k", Now: devserver.NewClock(time.Now()).Now})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k"})
	require.NoError(t, err)
	ctx := context.Background()

	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Success: true, Result: json.RawMessage(`{}`), ReadFirst: true}
	out, err := activities.Report(ctx, api, in)
	require.NoError(t, err)
	require.Equal(t, "completed", out.Status)
	out, err = activities.Report(ctx, api, in)
	require.NoError(t, err, "{} reads back as null, and is ours")
	require.True(t, out.AlreadyRecorded)
	require.Len(t, tm.Completions(string(task.ID)), 1, "posted once")

	other := claimed(t, api, "test.b", map[string]any{"x": 2})
	_, err = activities.Report(ctx, api, activities.ReportInput{TaskID: string(other.ID), WorkerID: "w1", Attempt: 7, Error: "old claim", ReadFirst: true})
	require.Error(t, err)
	require.Contains(t, err.Error(), "no longer by this claim")
	require.Empty(t, tm.Completions(string(other.ID)), "nothing is posted for another claim")
}

// ReportUnread never reads the task (the bridge cannot decode it): a post
// refused as not claimed, after an earlier one landed, is final, not a read
// retried forever.
func TestReportUnread_takes_not_claimed_as_final(t *testing.T) {
	t.Parallel()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k"})
	require.NoError(t, err)
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	tm.InjectFault(devserver.Fault{Path: "/tasks/" + string(task.ID), Method: "GET", Status: 200, Body: `garbage`})
	in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Error: "unreadable", ReadFirst: true}
	_, err = activities.ReportUnread(context.Background(), api, in)
	require.NoError(t, err, "posted without a read")
	_, err = activities.ReportUnread(context.Background(), api, in)
	require.True(t, activities.HasErrorType(err, activities.ErrTypeNotClaimed), "final: %v", err)
	require.True(t, activities.IsPermanent(err))
	require.Len(t, tm.Completions(string(task.ID)), 2)
	require.True(t, tm.Completions(string(task.ID))[0].Accepted)

	// An answer lost: whether it landed is unknown, and the task cannot be
	// read to tell; it is not for posting again.
	other := claimed(t, api, "test.b", map[string]any{"x": 2})
	tm.InjectFault(devserver.Fault{Path: "/tasks/" + string(other.ID) + "/complete", Method: "POST", Status: 502, After: true, Count: 1})
	_, err = activities.ReportUnread(context.Background(), api, activities.ReportInput{TaskID: string(other.ID), WorkerID: "w1", Attempt: 1, Error: "unreadable"})
	require.True(t, activities.HasErrorType(err, activities.ErrTypeUncertain), "%v", err)
	require.True(t, activities.IsPermanent(err))
}

// A report scheduled while its claim was young runs only after the claim
// timed out and this worker claimed the task again (the report waited in
// the queue): it reads first, and posts nothing for the newer claim. Before,
// "read first" was decided when the report was scheduled: it posted blind,
// and TaskManager took the old claim's outcome for the new one.
func TestReportOutcome_decides_read_first_when_it_runs(t *testing.T) {
	t.Parallel()
	clock := devserver.NewClock(time.Now())
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k", Now: clock.Now})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k"})
	require.NoError(t, err)
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	clock.Add(301 * time.Second) // the claim times out; w1 claims the task again
	typ, err := api.GetTaskType(context.Background(), "test.a")
	require.NoError(t, err)
	again, err := api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: typ.ID})
	require.NoError(t, err)
	require.EqualValues(t, 2, again.Attempts)

	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	(&activities.Activities{Registry: activities.NewRegistry(), TaskManager: api}).RegisterOn(env)
	in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Error: "attempt 1 failed",
		ReadFirstFrom: time.Now().Add(-time.Minute)} // scheduled young, run late
	_, err = env.ExecuteActivity(activities.ReportActivityName, in)
	require.Error(t, err)
	require.Contains(t, err.Error(), "no longer by this claim")
	require.Empty(t, tm.Completions(string(task.ID)), "nothing posted for the newer claim")
}

// Each outcome that lands is logged once, with its task and the status
// TaskManager gave it: operators see a task's end in the bridge's log,
// not only its claim.
func TestReportOutcome_logs_the_outcome_that_landed(t *testing.T) {
	t.Parallel()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k"})
	require.NoError(t, err)
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	var logs bytes.Buffer
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	(&activities.Activities{Registry: activities.NewRegistry(), TaskManager: api, Logger: slog.New(slog.NewTextHandler(&logs, nil))}).RegisterOn(env)
	in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Success: true, Result: json.RawMessage(`{"ok":true}`)}
	_, err = env.ExecuteActivity(activities.ReportActivityName, in)
	require.NoError(t, err)
	require.Contains(t, logs.String(), `level=INFO msg="✓ reported outcome" task_id=`+string(task.ID)+` attempts=1 success=true status=completed`)
}

// A handler whose result is over MaxResultBytes fails the task for good,
// saying so: Temporal would refuse a payload over 2 MiB, and the handler
// would run again and again.
func TestHandler_result_over_the_bound_fails_for_good(t *testing.T) {
	t.Parallel()
	reg := activities.NewRegistry()
	activities.Register(reg, "test.big", func(ctx context.Context, p struct{ N int }) (map[string]string, error) {
		return map[string]string{"s": strings.Repeat("x", p.N)}, nil
	})
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	(&activities.Activities{Registry: reg}).RegisterOn(env)
	in := activities.HandlerInput{TaskID: "1", TaskType: "test.big", WorkerID: "w1", Attempt: 1, Params: json.RawMessage(`{"N":1048576}`)}
	_, err := env.ExecuteActivity("test.big", in)
	require.Error(t, err)
	require.Contains(t, err.Error(), "handler test.big returned a result of 1048584 bytes, over the 1048576 a result may have")
	require.True(t, activities.IsPermanent(err))
	in.Params = json.RawMessage(`{"N":1000}`)
	_, err = env.ExecuteActivity("test.big", in)
	require.NoError(t, err)

	// The bound is on the result as Temporal writes it in the run's
	// history, where each < > & takes 6 bytes (\u003c): before, a 300 KB
	// string of "<" passed it and took 1.8 MB there (found by a review).
	activities.Register(reg, "test.lt", func(ctx context.Context, p struct{ N int }) (string, error) {
		return strings.Repeat("<", p.N), nil
	})
	(&activities.Activities{Registry: reg}).RegisterOn(env)
	in.TaskType, in.Params = "test.lt", json.RawMessage(`{"N":300000}`)
	_, err = env.ExecuteActivity("test.lt", in)
	require.ErrorContains(t, err, "handler test.lt returned a result of 1800012 bytes, over the 1048576")
	in.Params = json.RawMessage(`{"N":100000}`)
	out, err := env.ExecuteActivity("test.lt", in)
	require.NoError(t, err)
	var raw json.RawMessage
	require.NoError(t, out.Get(&raw))
	require.LessOrEqual(t, len(raw), 600_012, "as written in history")
}
