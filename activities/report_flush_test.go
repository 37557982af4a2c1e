package activities_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A multi-step task's step handler posts the task's progress in
// the background and does not wait for it; the report waits for that post
// (flush) so that no progress lands after the outcome.
func TestReportOutcome_report_flushes_progress_first(t *testing.T) {
	t.Parallel()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	var mu sync.Mutex
	var served []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tm.Handler().ServeHTTP(w, r)
		if r.Method == http.MethodPost {
			mu.Lock()
			served = append(served, r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
			mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL + "/api", APIKey: "k"})
	require.NoError(t, err)
	task := claimed(t, api, "test.p", map[string]any{"x": 1})
	mu.Lock()
	served = nil
	mu.Unlock()
	tm.InjectFault(devserver.Fault{Path: "/progress", Latency: 300 * time.Millisecond})

	reg := activities.NewRegistry()
	require.NoError(t, reg.Add("test.p", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		return json.RawMessage(`{}`), nil
	})))
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	acts := &activities.Activities{Registry: reg, TaskManager: api, ProgressInterval: time.Nanosecond}
	acts.RegisterOn(env)
	_, err = env.ExecuteActivity("test.p", activities.HandlerInput{TaskID: string(task.ID), TaskType: "test.p", WorkerID: "w1", Attempt: 1, Params: task.Params.Raw(),
		Step: "second", Progress: &activities.Progress{Percent: 50, Message: "step 2 of 2"}})
	require.NoError(t, err)
	_, err = env.ExecuteActivity(activities.ReportActivityName, activities.ReportInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Success: true, Result: json.RawMessage(`{}`)})
	require.NoError(t, err)
	require.NoError(t, acts.Idle(context.Background()))
	mu.Lock()
	defer mu.Unlock()
	t.Logf("served %v", served)
	require.Equal(t, []string{"progress", "complete"}, served)
}
