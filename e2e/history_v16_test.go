package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// The shape of retry-reads-first: the handler's first attempt outlasts
// the claim timeout, a worker that is not a bridge ("py") claims the task,
// and the attempt fails; Temporal's retry reads the task, finds it claimed
// by "py", runs no handler, and the run ends ClaimLost, posting nothing.
// Saved as history-v16-retry-reads-first.json.
func TestE2E_histories_replay_v16(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.tm.SetClaimTimeout(2 * time.Second)
	s.register("test.slow-flaky")
	id := s.create("test.slow-flaky", map[string]any{"n": 16})
	tt, err := s.api.GetTaskType(context.Background(), "test.slow-flaky")
	require.NoError(t, err)

	var runs atomic.Int32
	var pyErr atomic.Value
	reg := activities.NewRegistry()
	reg.MustAdd("test.slow-flaky", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		if runs.Add(1) > 1 {
			return json.RawMessage(`{}`), nil
		}
		// The claim times out while this attempt runs, and "py" claims the task.
		for {
			task, err := s.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "py", TaskTypeID: tt.ID})
			if err == nil {
				if string(task.ID) != id {
					pyErr.Store(errors.New("py claimed another task"))
				}
				// py's claim holds from now on, however late the retry
				// comes: the bridge cannot claim the task back first.
				s.tm.SetClaimTimeout(time.Hour)
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
	stop := s.runBridge(reg, "bridge-h16", "--claim-timeout=2s")
	wid := s.prefix + id
	require.Eventually(t, func() bool {
		d, err := s.describe(context.Background(), wid, "")
		return err == nil && d.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	}, 5*time.Minute, 100*time.Millisecond, "the run closes")
	stop()
	require.Nil(t, pyErr.Load())
	require.EqualValues(t, 1, runs.Load(), "the retry ran no handler")
	require.Empty(t, s.tm.Completions(id), "the run posted nothing")
	st, _ := s.tm.Task(id)
	require.Equal(t, "py", st.ClaimedBy)

	h := s.history(wid)
	requireVersion(t, h, "retry-reads-first", 1)
	s.replay(map[string]string{"retry-reads-first": id}, "history-v16-")
}
