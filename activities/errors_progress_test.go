package activities_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/time/rate"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
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

// handlerError runs a handler that returns ret, and returns the error the
// activity ends with.
func handlerError(t *testing.T, ret error) error {
	reg := activities.NewRegistry()
	require.NoError(t, reg.Add("t.err", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		return nil, ret
	})))
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	(&activities.Activities{Registry: reg}).RegisterOn(env)
	_, err := env.ExecuteActivity("t.err", activities.HandlerInput{TaskID: "1", TaskType: "t.err", WorkerID: "w1", Params: json.RawMessage(`{}`)})
	require.Error(t, err)
	return err
}

// A wrapped application error rebuilt on top keeps its details in the
// cause chain. (Found by a review of the fix that put it on top.)
func TestErrors_wrapped_application_error_keeps_its_details(t *testing.T) {
	inner := temporal.NewApplicationError("quota exceeded", "Quota", map[string]any{"retry_in": 30})
	err := handlerError(t, fmt.Errorf("upload: %w", inner))
	var ae *temporal.ApplicationError
	require.True(t, errors.As(err, &ae))
	found := false
	for e := error(ae); e != nil; e = errors.Unwrap(e) {
		if a, ok := e.(*temporal.ApplicationError); ok && a.HasDetails() {
			found = true
		}
	}
	require.True(t, found, "details lost: %v", err)
}

// Application errors joined (or several %w) are each written by their own
// message, not the SDK's "(type: …, retryable: …): …" rendering. (Found by
// the same review.)
func TestErrors_joined_application_errors_keep_their_messages(t *testing.T) {
	err := handlerError(t, errors.Join(activities.Permanent(errors.New("width must be positive")), activities.Permanent(errors.New("height must be positive"))))
	var ae *temporal.ApplicationError
	require.True(t, errors.As(err, &ae))
	require.Equal(t, "width must be positive\nheight must be positive", ae.Message())
}
