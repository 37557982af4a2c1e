package activities_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A task completed with another result does not hold ours: the
// report is NotClaimed, not "already recorded".
func TestReport_completed_with_another_result_is_not_ours(t *testing.T) {
	t.Parallel()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k"})
	require.NoError(t, err)
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	_, err = api.Complete(context.Background(), task.ID, taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{"n":1}`)})
	require.NoError(t, err)
	_, err = activities.Report(context.Background(), api, activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1,
		Success: true, Result: json.RawMessage(`{"n":2}`), ReadFirst: true})
	require.True(t, activities.HasErrorType(err, activities.ErrTypeNotClaimed), "%v", err)
}

// Attempt 2 fails with the same message as attempt 1. The task as
// read is claimed by this claim and still carries attempt 1's error; that
// is not attempt 2's outcome recorded: it must be posted.
func TestReport_same_error_on_the_next_attempt_is_posted(t *testing.T) {
	t.Parallel()
	tm, api, task := failedAndClaimedAgain(t)
	ctx := context.Background()
	out, err := activities.Report(ctx, api, activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 2, Error: "boom", ReadFirst: true})
	require.NoError(t, err)
	require.False(t, out.AlreadyRecorded)
	require.Len(t, tm.Completions(string(task.ID)), 2, "attempt 2's failure is posted")
}

// failedAndClaimedAgain claims a test.a task as w1, fails it ("boom":
// TaskManager re-queues it), and claims it again as w1 (attempt 2).
func failedAndClaimedAgain(t *testing.T) (*devserver.Server, *taskmanager.Client, taskmanager.Task) {
	t.Helper()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k"})
	require.NoError(t, err)
	ctx := context.Background()
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	_, err = api.Complete(ctx, task.ID, taskmanager.Completion{WorkerID: "w1", Error: "boom"})
	require.NoError(t, err)
	typ, err := api.GetTaskType(ctx, "test.a")
	require.NoError(t, err)
	again, err := api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: typ.ID})
	require.NoError(t, err)
	require.EqualValues(t, 2, again.Attempts)
	return tm, api, task
}
