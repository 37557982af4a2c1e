package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A local task (local: true) whose report's first post is under way when
// the bridge dies: the post lands after the bridge is gone, before the
// workflow task that ran the handler and the report completed. The next
// bridge runs that workflow task again; its local report is not the
// run's first workflow task's (ReportInput.FirstLocal false), so it reads
// the task first, finds the outcome recorded, and posts nothing. A report
// that took itself for a first post would post to a completed task.
func TestE2E_local_report_not_posted_again_by_a_bridge_taking_over(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")
	id := s.create("example.echo", map[string]any{"message": "once"})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("types:\n  example.echo: { local: true }\n"), 0o600))
	// The first post is held for 3 s, and served even once its client is
	// gone.
	posting := make(chan struct{}, 1)
	s.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id + "/complete", Method: "POST", Latency: 3 * time.Second, Late: true, Count: 1, Matched: posting})
	first := runBinary(t, s, "--config="+cfgFile)
	select {
	case <-posting:
	case <-time.After(2 * time.Minute):
		t.Fatal("no outcome posted")
	}
	require.NoError(t, first.Process.Kill()) // the bridge dies (SIGKILL)
	_, _ = first.Process.Wait()
	deadline := time.Now().Add(time.Minute)
	for st, _ := s.tm.Task(id); st.Status != "completed"; st, _ = s.tm.Task(id) {
		require.True(t, time.Now().Before(deadline), "the held post did not land")
		time.Sleep(50 * time.Millisecond)
	}
	require.Len(t, s.tm.Completions(id), 1)
	require.True(t, s.tm.Completions(id)[0].Late, "the post landed after the bridge died")

	// Another bridge takes the run over, and closes it.
	runBinary(t, s, "--config="+cfgFile)
	deadline = time.Now().Add(3 * time.Minute)
	for {
		d, err := s.describe(t.Context(), s.prefix+id, "")
		if err == nil && d.GetWorkflowExecutionInfo().GetCloseTime() != nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "run not closed")
		time.Sleep(200 * time.Millisecond)
	}
	require.Greater(t, len(s.history(s.prefix+id).GetEvents()), 3+4, "the run went on past its first workflow task")
	require.Len(t, s.tm.Completions(id), 1, "the bridge taking over posted the outcome again")
	require.Zero(t, s.tm.Stats().DuplicateSuccesses)
}
