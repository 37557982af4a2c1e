package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// The shapes of stepsReadOnRetry (version 4 of progress-in-handlers): the
// first step's first attempt outlasts the claim timeout, another worker
// claims the task, and the attempt fails; Temporal's retry reads the task
// and finds it claimed by that worker.
//
// A worker that is not a bridge ("py") signals nothing: the step waits
// claim_wait for a signal of py's claim, none comes, it runs no handler,
// the second step never starts, and the run ends ClaimLost, posting
// nothing. Saved as history-v17-steps-retry-reads-first.json.
func TestE2E_histories_replay_v17(t *testing.T) {
	s, id, c := runStepsRetry(t, "py")
	require.EqualValues(t, 0, c.again, "no handler ran again")
	require.Zero(t, c.second, "no step started after the claim was over")
	require.Empty(t, s.tm.Completions(id), "the run posted nothing")
	st, _ := s.tm.Task(id)
	require.Equal(t, "py", st.ClaimedBy)
	s.replay(map[string]string{"steps-retry-reads-first": id}, "history-v17-")
}

// A bridge ("w2") signals its claim to the run: the step runs again for
// w2's claim, the second step runs, and the outcome is posted with w2's
// claim. Saved as history-v17-steps-rerun-for-a-newer-claim.json.
func TestE2E_histories_replay_v17_rerun(t *testing.T) {
	s, id, c := runStepsRetry(t, "w2")
	require.EqualValues(t, 1, c.again, "the step ran again for w2's claim")
	require.EqualValues(t, 1, c.second)
	st, _ := s.tm.Task(id)
	require.Equal(t, "completed", st.Status)
	require.Len(t, s.tm.Completions(id), 1)
	require.Equal(t, "w2", s.tm.Completions(id)[0].WorkerID)
	s.replay(map[string]string{"steps-rerun-for-a-newer-claim": id}, "history-v17-")
}

// stepsRetryCounts counts what ran in runStepsRetry: the first step's
// handler started again (for a newer claim, or retried), and the second
// step.
type stepsRetryCounts struct{ again, second int32 }

// runStepsRetry runs one task of two steps until its run closes; the
// first step's first attempt waits for the claim to time out, has
// claimant claim the task (signalling the run when claimant is a bridge,
// not "py"), and fails.
func runStepsRetry(t *testing.T, claimant string) (*stack, string, stepsRetryCounts) {
	s := newStack(t, devserver.StylePHP)
	s.tm.SetClaimTimeout(2 * time.Second)
	s.register("demo.stepsretry")
	id := s.create("demo.stepsretry", map[string]any{"n": 17})
	wid := s.prefix + id
	tt, err := s.api.GetTaskType(context.Background(), "demo.stepsretry")
	require.NoError(t, err)

	var first, again, second atomic.Int32
	var claimErr atomic.Value
	reg := activities.NewRegistry()
	reg.MustAdd("test.slow-flaky", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		if first.Add(1) > 1 {
			again.Add(1)
			return json.RawMessage(`{}`), nil
		}
		// The claim times out while this attempt runs, and claimant claims the task.
		for {
			task, err := s.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: claimant, TaskTypeID: tt.ID})
			if err == nil {
				if string(task.ID) != id {
					claimErr.Store(errors.New("claimant claimed another task"))
				}
				s.tm.SetClaimTimeout(time.Hour) // its claim holds from now on
				if claimant != "py" {
					c := workflows.Claim{WorkerID: claimant, Attempts: int(task.Attempts), ClaimedAt: time.Now()}
					if err := s.tc.SignalWorkflow(ctx, wid, "", workflows.ClaimSignalName, c); err != nil {
						claimErr.Store(err)
					}
				}
				return nil, errors.New("first attempt fails")
			}
			select {
			case <-ctx.Done():
				claimErr.Store(ctx.Err())
				return nil, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}))
	reg.MustAdd("test.second", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
		second.Add(1)
		return json.RawMessage(`{}`), nil
	}))
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.stepsretry:
    claim_wait: 2s
    steps:
      - { name: first, handler: test.slow-flaky }
      - { name: second, handler: test.second }
`), 0o600))
	stop := s.runBridge(reg, "bridge-h17", "--config="+cfgFile, "--claim-timeout=2s")
	require.Eventually(t, func() bool {
		d, err := s.describe(context.Background(), wid, "")
		return err == nil && d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	}, 5*time.Minute, 100*time.Millisecond, "the run closes")
	stop()
	require.Nil(t, claimErr.Load())
	requireVersion(t, s.history(wid), "progress-in-handlers", 4)
	return s, id, stepsRetryCounts{again: again.Load(), second: second.Load()}
}
