package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A multi-step type with local steps (local: true, so the report is local
// too). The bridge dies after the local report's post landed and before
// the workflow task that ran the steps completed (no markers in history).
// The next bridge takes the run over past its first workflow task: it
// reads the task before the first local step (stepsGuardClaim), finds the
// outcome recorded, and runs no step again. Before, every step's handler
// ran again for a task that was completed, as a single local handler's
// did not (SkipIfDone). (Found by a review.)
func TestE2E_local_steps_not_run_again_by_a_bridge_taking_over_after_the_report(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	dir := t.TempDir()
	marks := filepath.Join(dir, "marks")
	s.register("demo.localsteps", "mark.one", "mark.two")
	id := s.create("demo.localsteps", map[string]any{"n": 1})
	cfgFile := filepath.Join(dir, "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.localsteps:
    local: true
    steps:
      - { name: one, handler: mark.one }
      - { name: two, handler: mark.two }
  mark.one:
    exec: { command: [/bin/sh, -c, "/bin/cat >/dev/null; echo one >> `+marks+`; echo '{\"ok\":1}'"] }
  mark.two:
    exec: { command: [/bin/sh, -c, "/bin/cat >/dev/null; echo two >> `+marks+`; echo '{\"ok\":2}'"] }
`), 0o600))
	// The outcome's post lands, its answer is lost; the local report's
	// retry reads the task first, slowly: the bridge dies meanwhile.
	s.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id + "/complete", Method: "POST", After: true, Status: 503, Count: 1})
	first := runBinary(t, s, "--config="+cfgFile)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		accepted := false
		for _, c := range s.tm.Completions(id) {
			accepted = accepted || c.Accepted
		}
		if accepted {
			// the local report's retry reads first: slowly
			s.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: "GET", Latency: 20 * time.Second, Count: 1})
			time.Sleep(300 * time.Millisecond)
			break
		}
		require.True(t, time.Now().Before(deadline), "no outcome posted")
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("killing at %s", time.Now().UTC().Format("15:04:05.000"))
	require.NoError(t, first.Process.Kill()) // the bridge dies (SIGKILL)
	_, _ = first.Process.Wait()
	st, _ := s.tm.Task(id)
	require.Equal(t, "completed", st.Status)
	before, _ := os.ReadFile(marks)
	require.Equal(t, "one\ntwo\n", string(before), "each step ran once before the crash")

	// Another bridge takes the run over.
	runBinary(t, s, "--config="+cfgFile)
	s.waitClosed(s.prefix + id)
	after, _ := os.ReadFile(marks)
	t.Logf("marks after takeover: %q", after)
	require.Equal(t, 1, strings.Count(string(after), "one"), "step one's handler ran again for a completed task")
	require.Equal(t, 1, strings.Count(string(after), "two"), "step two's handler ran again for a completed task")
}

// A local step that runs past its first workflow task's heartbeat (the
// SDK completes a workflow task whose local activity runs past 80 % of
// its timeout): the bridge dies while the outcome's post is under way,
// the post lands, and the next bridge replays the first workflow task, at
// its history length, where the step has no marker. The guard reads only
// past the first workflow task, and reading there would change the run's
// commands; the step's activity, scheduled in a replay, reads first
// instead (HandlerInput.ReadFirst), finds the task completed and runs no
// handler. Before, it ran again for a completed task. (Found by a review.)
func TestE2E_local_step_not_run_again_after_a_heartbeat_of_its_workflow_task(t *testing.T) {
	heartbeatTakeover(t, "demo.slowsteps", `
types:
  demo.slowsteps:
    local: true
    steps:
      - { name: slow, handler: mark.slow }
  mark.slow:
    exec: SLOW
`, "the step's handler ran again for a completed task")
}
