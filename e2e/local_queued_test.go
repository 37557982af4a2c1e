package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A local handler still waiting for a slot when its run leaves the
// worker reads the task before it runs (HandlerInput.RunToken): the SDK
// runs a queued local activity of a run it no longer holds, and another
// bridge may have taken the run over and reported meanwhile. Here the
// only slot is held by another task's handler; the waiting task's run is
// terminated (its workflow task's next heartbeat fails, and the worker
// drops the run: tmbridge_runs_held falls) and the task completed by
// someone else. When the slot frees, the queued handler finds the claim
// over and does not run. Before, it ran for a task already completed.
// (Found by a review.)
func TestE2E_local_handler_whose_run_left_the_worker_reads_first(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	dir := t.TempDir()
	marks, release, blocking := filepath.Join(dir, "marks"), filepath.Join(dir, "release"), filepath.Join(dir, "blocking")
	s.register("mark.block", "mark.queued")
	cfgFile := filepath.Join(dir, "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
max_in_flight: 2
temporal: { max_concurrent_activities: 1 }
types:
  mark.block:
    local: true
    exec: { command: [/bin/sh, -c, "/bin/cat >/dev/null; touch `+blocking+`; while [ ! -e `+release+` ]; do sleep 0.1; done; echo '{\"ok\":1}'"] }
  mark.queued:
    local: true
    exec: { command: [/bin/sh, -c, "/bin/cat >/dev/null; echo ran >> `+marks+`; echo '{\"ok\":2}'"] }
`), 0o600))
	block := s.create("mark.block", map[string]any{"n": 1})
	metrics := freeAddr(t)
	runBinary(t, s, "--config="+cfgFile, "--metrics-addr="+metrics)
	require.Eventually(t, func() bool { _, err := os.Stat(blocking); return err == nil }, 2*time.Minute, 50*time.Millisecond, "the blocking handler did not start")

	// The queued task's handler waits for the only slot: its first
	// workflow task's heartbeat shows it is scheduled.
	queued := s.create("mark.queued", map[string]any{"n": 2})
	require.Eventually(t, func() bool { return hasEvent(s, s.prefix+queued, enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) },
		2*time.Minute, 100*time.Millisecond, "the queued task's first workflow task did not complete")
	// Its run ends in Temporal; the worker drops it at its workflow
	// task's next heartbeat, which fails.
	require.Eventually(t, func() bool { return runsHeld(metrics) == 2 }, 2*time.Minute, 100*time.Millisecond, "each task's run held")
	require.NoError(t, s.tc.TerminateWorkflow(context.Background(), s.prefix+queued, "", "the run leaves the worker"))
	require.Eventually(t, func() bool { return runsHeld(metrics) == 1 }, 2*time.Minute, 100*time.Millisecond, "the worker did not drop the run")
	st, ok := s.tm.Task(queued)
	require.True(t, ok)
	require.Equal(t, "claimed", st.Status)
	// Someone else reports it (as a bridge that took the run over would).
	_, err := s.api.Complete(context.Background(), taskmanager.ID(queued), taskmanager.Completion{WorkerID: st.ClaimedBy, Success: true, Result: json.RawMessage(`{"by":"another"}`)})
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(release, nil, 0o600)) // the slot frees
	require.Equal(t, "completed", s.waitFinal([]string{block})[block].Status)
	// The queued handler has had its slot: the blocking task's report,
	// local too, came after it in the queue.
	_, err = os.Stat(marks)
	require.True(t, os.IsNotExist(err), "the queued handler ran for a task already completed")
	require.Len(t, s.tm.Completions(queued), 1, "only the other's report")
	require.Zero(t, s.tm.Stats().DuplicateSuccesses)
}

// runsHeld is the tmbridge_runs_held gauge of the bridge serving metrics
// at addr (-1 when it does not show).
func runsHeld(addr string) int {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(metricsText(addr)))
	if err != nil {
		return -1
	}
	v, ok := sample(fams, "tmbridge_runs_held", nil)
	if !ok {
		return -1
	}
	return int(v)
}
