package activities_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge/taskmanager"
	"github.com/prismq/tmbridge/bridge/taskmanager/devserver"
)

// A local report is re-run from scratch after a crash, so it always
// reads first (info.IsLocalActivity), even for a fresh claim: here the old
// claim's failure landed, the task was re-queued and this same worker id
// claimed it again; the local re-run must not post for the new claim.
func TestReportOutcome_local_report_reads_first(t *testing.T) {
	t.Parallel()
	clock := devserver.NewClock(time.Now())
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k", Now: clock.Now})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k"})
	require.NoError(t, err)
	ctx := context.Background()
	task := claimed(t, api, "test.a", map[string]any{"x": 1})
	_, err = api.Complete(ctx, task.ID, taskmanager.Completion{WorkerID: "w1", Error: "boom"}) // the crashed run's post
	require.NoError(t, err)
	typ, err := api.GetTaskType(ctx, "test.a")
	require.NoError(t, err)
	again, err := api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: typ.ID})
	require.NoError(t, err)
	require.EqualValues(t, 2, again.Attempts)

	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	acts := &activities.Activities{Registry: activities.NewRegistry(), TaskManager: api}
	acts.RegisterOn(env)
	in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Error: "boom"} // fresh claim: no ReadFirst
	val, err := env.ExecuteLocalActivity(acts.ReportOutcome, in)
	require.NoError(t, err)
	var out activities.ReportOutput
	require.NoError(t, val.Get(&out))
	require.True(t, out.AlreadyRecorded)
	require.Len(t, tm.Completions(string(task.ID)), 1, "nothing posted for the newer claim")
	st, err := api.GetTask(ctx, task.ID)
	require.NoError(t, err)
	require.Equal(t, "claimed", string(st.Status))
}
