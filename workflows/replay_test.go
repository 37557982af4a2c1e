package workflows_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/internal/gohandlers"
	"github.com/prismq/tmbridge/workflows"
)

// Histories recorded from a real Temporal server (see e2e's
// TestE2E_histories_replay) must replay, each under its own workflow id
// (ReplayOptions): a change to TaskWorkflow that
// would break running workflows fails here. Re-record them with
// TMBRIDGE_UPDATE_HISTORY=1 only for a deliberate, versioned change.
func TestTaskWorkflow_replays_saved_histories(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/history-*.json")
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(files), 33, "saved histories: echo, local, failure, pipeline; v2: claim moved, cancel during report; v3: exact templates, composition; v4 (durations as strings, summaries, progress in handlers): web, local steps, echo, cancel during handler, cancelled Go workflow handler; v5: cancel during handler, waited; v6: claim moved while waiting, and the same with the signal in the handler end's task; v7: failed group waits for its cancelled step; v8: cancelled Go workflow handler, noted; enqueue by timers (v8) and by retries (v9); v10: a signal that does not decode dropped, a for_each over a named list of large ids; v11: enqueue under the history guard; v12: a template guard on an empty object PHP hands back as a list (php-empty-objects); v13: a newer claim read by the run itself after the report's read failed (read-claim-over); v14: a run started late reads its task before its handler (read-late-start); v15: a step after one that outlasted half the claim timeout reads the task first (progress-in-handlers version 3, stepsGuardClaim); v16: a retried handler attempt finds the claim taken by another worker and runs no handler (retry-reads-first); rel-<commit>-*: recorded by released commits on the old path of a version gate: a cancel during the report (report-survives-cancel), regular and local; a wait_for and a claim signal that do not decode (drop-bad-signal); a cancel during the claim wait of a run started before claim_timeout")
	for _, f := range files {
		r := newReplayer(t)
		h := loadHistory(t, f)
		require.NoError(t, r.ReplayWorkflowHistoryWithOptions(nil, h, workflows.ReplayOptions(h)), f)
	}
}

// newReplayer is the tests' WorkflowReplayer, TaskWorkflow registered,
// with the SDK's one-second deadlock detection off: a replay checks
// determinism, and a heavy history's workflow task may take over a second
// on a slow machine (-race on two busy cores: the previous release's
// for_each did in CI).
func newReplayer(t *testing.T, interceptors ...interceptor.WorkerInterceptor) worker.WorkflowReplayer {
	t.Helper()
	r, err := worker.NewWorkflowReplayerWithOptions(worker.WorkflowReplayerOptions{Interceptors: interceptors, DisableDeadlockDetection: true})
	require.NoError(t, err)
	r.RegisterWorkflowWithOptions(workflows.TaskWorkflow, workflow.RegisterOptions{Name: workflows.TaskWorkflowName})
	return r
}

// loadHistory reads a history saved as JSON.
func loadHistory(t *testing.T, file string) *historypb.History {
	t.Helper()
	raw, err := os.Open(file)
	require.NoError(t, err)
	defer raw.Close()
	h, err := client.HistoryFromJSON(raw, client.HistoryJSONOptions{})
	require.NoError(t, err, file)
	return h
}

// goHandlerReplayer replays runs of Go workflow handler fn (as
// gohandlers.GoroutinesName) as the bridge's worker runs them.
func goHandlerReplayer(t *testing.T, fn any) worker.WorkflowReplayer {
	t.Helper()
	r := newReplayer(t, workflows.GoroutinePanics())
	r.RegisterWorkflowWithOptions(workflows.FailOnPanic(gohandlers.GoroutinesName, fn), workflow.RegisterOptions{Name: gohandlers.GoroutinesName})
	return r
}

// Histories of Go workflow handlers (child runs, testdata/child-*.json)
// replay with FailOnPanic and GoroutinePanics as the bridge registers
// them: child-goroutines.json was recorded before FailOnPanic ran the
// handler in a coroutine of its own.
func TestGoHandler_replays_saved_histories(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/child-*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		h := loadHistory(t, f)
		require.NoError(t, goHandlerReplayer(t, gohandlers.Goroutines).ReplayWorkflowHistoryWithOptions(nil, h, workflows.ReplayOptions(h)), f)
	}
}
