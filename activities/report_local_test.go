package activities_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
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

// A local report its run scheduled live in the first attempt of its first
// workflow task (FirstLocal) cannot be a run again after a crash: on a
// fresh claim it posts without reading the task, before or after. Without
// FirstLocal (a later workflow task, or a run of an older bridge) it
// reads first and back, as before.
func TestReportOutcome_first_local_report_posts_without_reading(t *testing.T) {
	t.Parallel()
	for _, first := range []bool{true, false} {
		var gets atomic.Int32
		tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/tasks/") {
				gets.Add(1)
			}
			tm.Handler().ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		api, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL + "/api", APIKey: "k"})
		require.NoError(t, err)
		task := claimed(t, api, "test.a", map[string]any{"x": 1})

		var suite testsuite.WorkflowTestSuite
		env := suite.NewTestActivityEnvironment()
		env.SetTestTimeout(time.Minute) // a local activity's deadline: not the testsuite's 3 s, which a loaded machine passes
		acts := &activities.Activities{Registry: activities.NewRegistry(), TaskManager: api}
		acts.RegisterOn(env)
		in := activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Success: true, Result: json.RawMessage(`{"ok":true}`), FirstLocal: first}
		val, err := env.ExecuteLocalActivity(acts.ReportOutcome, in)
		require.NoError(t, err)
		var out activities.ReportOutput
		require.NoError(t, val.Get(&out))
		require.Equal(t, "completed", out.Status)
		require.Len(t, tm.Completions(string(task.ID)), 1)
		if first {
			require.Zero(t, gets.Load(), "FirstLocal: no read")
		} else {
			require.EqualValues(t, 2, gets.Load(), "not FirstLocal: read first, and back")
		}
	}
}
