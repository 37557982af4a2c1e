package activities_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// Report (it can read): TaskManager answered 2xx with a body that does not
// read: the write is over on the server (it answered), nothing is "still
// under way", so the next attempt (which reads first) does not wait a
// whole API timeout, as an answer that never came does.
func TestReport_2xx_answer_that_does_not_read_is_retried_without_waiting(t *testing.T) {
	tm, api := reviewAPI(t, 0) // default 30 s timeout
	task := claimed(t, api, "test.read2xx", map[string]any{"x": 1})
	tm.InjectFault(devserver.Fault{Path: "/complete", Method: "POST", Status: 200, After: true, Count: 1,
		Body: "<b>Warning</b>: x<br />\n" + `{"success":true,"data":{"id":"1","status":"completed"}}`})
	_, err := activities.Report(context.Background(), api, activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Success: true, Result: []byte(`{"ok":1}`)})
	require.Error(t, err)
	var ae *temporal.ApplicationError
	require.True(t, errors.As(err, &ae))
	require.Zero(t, ae.NextRetryDelay(), "retry delayed by %s: %v", ae.NextRetryDelay(), err)
}
