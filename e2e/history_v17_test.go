package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// The shape of stepsReadOnRetry (version 4 of progress-in-handlers): the
// first step's first attempt outlasts the claim timeout, a worker that is
// not a bridge ("py") claims the task, and the attempt fails; Temporal's
// retry reads the task, finds it claimed by "py", waits claim_wait for a
// signal of py's claim (none comes: py is no bridge), runs no handler, the
// second step never starts, and the run ends ClaimLost, posting nothing.
// Saved as history-v17-steps-retry-reads-first.json.
func TestE2E_histories_replay_v17(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.tm.SetClaimTimeout(2 * time.Second)
	s.register("demo.stepsretry")
	id := s.create("demo.stepsretry", map[string]any{"n": 17})
	tt, err := s.api.GetTaskType(context.Background(), "demo.stepsretry")
	require.NoError(t, err)

	var first, retried, second atomic.Int32
	var pyErr atomic.Value
	reg := activities.NewRegistry()
	reg.MustAdd("test.slow-flaky", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		if activity.GetInfo(ctx).Attempt > 1 {
			retried.Add(1)
			return json.RawMessage(`{}`), nil
		}
		first.Add(1)
		// The claim times out while this attempt runs, and "py" claims the task.
		for {
			task, err := s.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "py", TaskTypeID: tt.ID})
			if err == nil {
				if string(task.ID) != id {
					pyErr.Store(errors.New("py claimed another task"))
				}
				s.tm.SetClaimTimeout(time.Hour) // py's claim holds from now on
				return nil, errors.New("first attempt fails")
			}
			select {
			case <-ctx.Done():
				pyErr.Store(ctx.Err())
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
	wid := s.prefix + id
	require.Eventually(t, func() bool {
		d, err := s.describe(context.Background(), wid, "")
		return err == nil && d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	}, 5*time.Minute, 100*time.Millisecond, "the run closes")
	stop()
	require.Nil(t, pyErr.Load())
	require.EqualValues(t, 1, first.Load())
	require.Zero(t, retried.Load(), "the retry ran no handler")
	require.Zero(t, second.Load(), "no step started after the claim was over")
	require.Empty(t, s.tm.Completions(id), "the run posted nothing")
	st, _ := s.tm.Task(id)
	require.Equal(t, "py", st.ClaimedBy)

	h := s.history(wid)
	requireVersion(t, h, "progress-in-handlers", 4)
	s.replay(map[string]string{"steps-retry-reads-first": id}, "history-v17-")
}

// requireVersion checks that the run recorded version v of changeID.
func requireVersion(t *testing.T, h *historypb.History, changeID string, v int) {
	t.Helper()
	require.True(t, slices.ContainsFunc(h.GetEvents(), func(ev *historypb.HistoryEvent) bool {
		m := ev.GetMarkerRecordedEventAttributes()
		if m.GetMarkerName() != "Version" {
			return false
		}
		var id string
		var got int
		dc := converter.GetDefaultDataConverter()
		return dc.FromPayloads(m.GetDetails()["change-id"], &id) == nil && id == changeID &&
			dc.FromPayloads(m.GetDetails()["version"], &got) == nil && got == v
	}), "the run took version %d of %s", v, changeID)
}
