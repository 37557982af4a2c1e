package activities_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

func reviewAPI(t *testing.T, timeout time.Duration) (*devserver.Server, *taskmanager.Client) {
	t.Helper()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k", Timeout: timeout})
	require.NoError(t, err)
	return tm, api
}

// TaskManager refuses the post as "not in claimed state" yet the
// task reads as held by this claim: the outcome is not recorded, so the
// report must be retried, never answered as a success.
func TestReport_refused_post_that_reads_as_ours_is_retried(t *testing.T) {
	t.Parallel()
	tm, api := reviewAPI(t, 0)
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	tm.InjectFault(devserver.Fault{Path: "/tasks/" + string(task.ID) + "/complete", Method: "POST", Status: 400,
		Body: `{"success":false,"error":"Task is not in claimed state"}`, Count: 1})
	out, err := activities.Report(context.Background(), api, activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Error: "x"})
	require.Error(t, err, "nothing was recorded (got %+v)", out)
	require.False(t, activities.IsPermanent(err))
}

// A task deleted from TaskManager is TaskNotFound (final), whether
// the report reads first or posts first; not a read retried forever.
func TestReport_deleted_task_is_task_not_found(t *testing.T) {
	t.Parallel()
	_, api := reviewAPI(t, 0)
	for _, readFirst := range []bool{true, false} {
		_, err := activities.Report(context.Background(), api, activities.ReportInput{TaskID: "999999", WorkerID: "w1", Attempt: 1, Error: "x", ReadFirst: readFirst})
		require.True(t, activities.HasErrorType(err, activities.ErrTypeTaskNotFound), "read first %v: %v", readFirst, err)
	}
}

// ReportUnread never reads; a 403 (claimed by another) is final.
func TestReport_unread_403_is_final_without_a_read(t *testing.T) {
	t.Parallel()
	tm, api := reviewAPI(t, 0)
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	tm.InjectFault(devserver.Fault{Path: "/tasks/" + string(task.ID), Method: "GET", Status: 200, Body: `garbage`})
	_, err := activities.ReportUnread(context.Background(), api, activities.ReportInput{TaskID: string(task.ID), WorkerID: "w2", Attempt: 1, Error: "x"})
	require.True(t, activities.HasErrorType(err, activities.ErrTypeNotClaimed), "%v", err)
}

// A 504 on the post is an answer lost (the write may land): for
// ReportUnread it is Uncertain, never re-posted; for Report the retry
// waits at least the client timeout.
func TestReport_504_is_ambiguous(t *testing.T) {
	t.Parallel()
	tm, api := reviewAPI(t, 7*time.Second)
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	tm.InjectFault(devserver.Fault{Path: "/complete", Method: "POST", Status: 504, After: true, Count: 1})
	_, err := activities.ReportUnread(context.Background(), api, activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Error: "x"})
	require.True(t, activities.HasErrorType(err, activities.ErrTypeUncertain), "%v", err)

	other := claimed(t, api, "test.b", map[string]any{"x": 2})
	tm.InjectFault(devserver.Fault{Path: "/complete", Method: "POST", Status: 502, After: true, Count: 1})
	_, err = activities.Report(context.Background(), api, activities.ReportInput{TaskID: string(other.ID), WorkerID: "w1", Attempt: 1, Error: "x"})
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "%v", err)
	require.GreaterOrEqual(t, appErr.NextRetryDelay(), 7*time.Second, "a write that may still land is not raced by the retry")
}

// A failure that re-queued the task reads back as "pending (retry)".
func TestReport_requeued_failure_status(t *testing.T) {
	t.Parallel()
	tm, api := reviewAPI(t, 0)
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	tm.InjectFault(devserver.Fault{Path: "/complete", Method: "POST", Status: 502, After: true, Count: 1})
	in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Error: "x"}
	_, err := activities.Report(context.Background(), api, in)
	require.Error(t, err)
	in.ReadFirst = true
	out, err := activities.Report(context.Background(), api, in)
	require.NoError(t, err)
	require.True(t, out.AlreadyRecorded)
	require.Equal(t, "pending (retry)", out.Status)
}
