package activities_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/prismq/tmbridge/activities"
)

// A local report is re-run from scratch after a crash, so it always
// reads first (info.IsLocalActivity), even for a fresh claim: here the old
// claim's failure landed, the task was re-queued and this same worker id
// claimed it again; the local re-run must not post for the new claim.
func TestReportOutcome_local_report_reads_first(t *testing.T) {
	t.Parallel()
	// The crashed run's failure landed; the task was re-queued and w1
	// claimed it again.
	tm, api, task := failedAndClaimedAgain(t)

	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.SetTestTimeout(time.Minute) // a local activity's deadline: not the testsuite's 3 s, which a loaded machine passes
	acts := &activities.Activities{Registry: activities.NewRegistry(), TaskManager: api}
	acts.RegisterOn(env)
	in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Error: "boom"} // fresh claim: no ReadFirst
	val, err := env.ExecuteLocalActivity(acts.ReportOutcome, in)
	require.NoError(t, err)
	var out activities.ReportOutput
	require.NoError(t, val.Get(&out))
	require.True(t, out.AlreadyRecorded)
	require.Len(t, tm.Completions(string(task.ID)), 1, "nothing posted for the newer claim")
	st, err := api.GetTask(context.Background(), task.ID)
	require.NoError(t, err)
	require.Equal(t, "claimed", string(st.Status))
}
