package activities_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// The outcome's post lands and TaskManager answers 200 with a body that
// does not read (PHP with display_errors on prints a warning before the
// JSON). For ReportUnread, which never reads the task, that is an answer
// lost (ErrTypeUncertain), not a retryable error: its caller
// (bridge.failTask) would post again, blind, and that second post would end
// the next claim of this same worker id.
func TestReportUnread_2xx_answer_that_does_not_read_is_uncertain(t *testing.T) {
	t.Parallel()
	tm, api := reviewAPI(t, 0)
	task := claimed(t, api, "test.unread", map[string]any{"x": 1})
	tm.InjectFault(devserver.Fault{Path: "/complete", Method: "POST", Status: 200, After: true, Count: 1,
		Body: "<br />\n<b>Warning</b>: Undefined array key \"x\" in /var/www/api/TaskController.php on line 88<br />\n" +
			`{"success":true,"message":"ok","data":{"id":"1","status":"pending (retry)"}}`})
	in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Error: "cannot start"}
	_, err := activities.ReportUnread(context.Background(), api, in)
	require.Error(t, err)
	firstRetryable := !activities.IsPermanent(err)

	// What the caller's retry does meanwhile: the failure re-queued the
	// task, this worker claimed it again (attempt 2), and the blind re-post
	// fails that newer claim.
	tt, terr := api.GetTaskType(context.Background(), "test.unread")
	require.NoError(t, terr)
	again, cerr := api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: tt.ID})
	if cerr == nil && firstRetryable {
		_, _ = activities.ReportUnread(context.Background(), api, in)
		after, gerr := api.GetTask(context.Background(), again.ID)
		require.NoError(t, gerr)
		t.Logf("claim attempt %d of w1 after the re-post: status %q attempts %d", int(again.Attempts), after.Status, int(after.Attempts))
	}
	require.False(t, firstRetryable, "a 200 whose body is unreadable came back retryable: %v", err)
	require.True(t, activities.HasErrorType(err, activities.ErrTypeUncertain), "%v", err)
}
