package activities_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/time/rate"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge/taskmanager"
)

// A handler's first 100 is posted outside the interval and the budget;
// a later 100 is an update like any. Before, a handler that reported 100
// again and again (a "finishing…" loop) posted every one, past both.
// (Found by a review.)
func TestProgress_100_is_posted_outside_the_budget_once(t *testing.T) {
	b := setup(t)
	reg := activities.NewRegistry()
	require.NoError(t, reg.Add("test.done", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		for range 20 {
			activities.ReportProgress(ctx, 100, "finishing")
			time.Sleep(20 * time.Millisecond)
		}
		return json.RawMessage(`{}`), nil
	})))
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	acts := &activities.Activities{Registry: reg, TaskManager: b.api, ProgressInterval: time.Hour, ProgressBudget: rate.NewLimiter(0, 1)}
	acts.RegisterOn(env)
	ctx := context.Background()
	_, err := b.api.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: "test.done", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	_, err = b.api.CreateTask(ctx, "test.done", map[string]any{"n": 1})
	require.NoError(t, err)
	task, err := b.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "1"})
	require.NoError(t, err)
	_, err = env.ExecuteActivity("test.done", activities.HandlerInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Params: task.Params.Raw()})
	require.NoError(t, err)
	require.NoError(t, acts.Idle(ctx))
	require.Len(t, b.tm.ProgressCalls(string(task.ID)), 1, "the interval is 1 h and the budget 1 call: the first 100 only")
}

// Permanent(nil), Transient(nil, 0) and InvalidParams(nil) are nil, so
// that `return r, activities.InvalidParams(check(p))` is safe. Before,
// InvalidParams(nil) panicked. (Found by a review.)
func TestErrors_of_nil_are_nil(t *testing.T) {
	require.Nil(t, activities.Permanent(nil))
	require.Nil(t, activities.Transient(nil, 0))
	require.NotPanics(t, func() { require.Nil(t, activities.InvalidParams(nil)) })
}
