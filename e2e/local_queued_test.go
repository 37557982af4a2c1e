package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A local handler that waits for a slot of its worker past the
// activities.LateLocalStart reads the task before it runs: it may be a
// run's the worker no longer holds (the SDK keeps a queued local activity
// of an evicted run), whose task another bridge took over and reported.
// Here one slot is held by another task's handler while the task is
// completed by someone else: when the slot frees, the queued handler
// finds the claim over and does not run. Before, it ran for a task already
// completed. (Found by a review.)
func TestE2E_local_handler_that_waited_for_a_slot_reads_first(t *testing.T) {
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
	runBinary(t, s, "--config="+cfgFile)
	require.Eventually(t, func() bool { _, err := os.Stat(blocking); return err == nil }, 2*time.Minute, 50*time.Millisecond, "the blocking handler did not start")

	// The queued task's handler waits for the only slot: its first
	// workflow task's heartbeat (at 80 % of its timeout) shows it waited
	// that long.
	queued := s.create("mark.queued", map[string]any{"n": 2})
	deadline := time.Now().Add(2 * time.Minute)
	for !hasEvent(s, s.prefix+queued, enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) {
		require.True(t, time.Now().Before(deadline), "the queued task's first workflow task did not complete")
		time.Sleep(100 * time.Millisecond)
	}
	st, ok := s.tm.Task(queued)
	require.True(t, ok)
	require.Equal(t, "claimed", st.Status)
	// Someone else reports it (as a bridge that took the run over would).
	_, err := s.api.Complete(context.Background(), taskmanager.ID(queued), taskmanager.Completion{WorkerID: st.ClaimedBy, Success: true, Result: json.RawMessage(`{"by":"another"}`)})
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(release, nil, 0o600)) // the slot frees
	final := s.waitFinal([]string{block, queued})
	require.Equal(t, "completed", final[block].Status)
	s.waitClosed(s.prefix + queued)
	_, err = os.Stat(marks)
	require.True(t, os.IsNotExist(err), "the queued handler ran for a task already completed")
	require.Len(t, s.tm.Completions(queued), 1, "only the other's report")
	require.Zero(t, s.tm.Stats().DuplicateSuccesses)
}
