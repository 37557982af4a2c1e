package bridge

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// The bridge renews its own claim of a long run: claim 2 of worker w1.
// The run's report of claim 1 read the task (claimed by w1, attempt 1)
// just before, and its post lands as claim 2 reaches Temporal: TaskManager
// takes it for claim 2 (it checks only the worker id), so claim 2 is over,
// and the run closes. No new run may start for claim 2: its handler would
// run again for a task that is completed. Before, the start of a fresh
// claim was not checked, and a run closing between the claim and its
// start was replaced by a new one. (Found by a review.)
func TestStart_renewal_whose_claim_an_old_post_ended_starts_no_run(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) {
		c.ClaimTimeout = time.Second
	})
	bb.only("example.sleep")
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	wf := "task-" + id
	var hooked atomic.Bool
	// As claim 2 reaches Temporal (a start, or a signal to the open run),
	// the run's report of claim 1 lands on it, and the run closes.
	landOldPost := func(claim workflows.Claim) {
		if claim.Attempts != 2 || !hooked.CompareAndSwap(false, true) {
			return
		}
		_, err := bb.api.Complete(context.Background(), taskmanager.ID(id), taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{"slept":30}`)})
		if err != nil {
			t.Errorf("complete: %v", err)
		}
		if r := bb.temporal.latest(wf); r != nil && !isClosed(r) {
			close(r.closed)
		}
	}
	bb.temporal.refuse = func(in workflows.TaskInput) error { landOldPost(in.Claim); return nil }
	bb.temporal.beforeSignal = func(_ string, claim workflows.Claim) { landOldPost(claim) }
	bb.serve(t)
	require.Eventually(t, hooked.Load, eventually, 10*time.Millisecond, "the claim is renewed (claim 2)")
	require.Eventually(t, func() bool { return !bb.b.adm.tracked(wf) || len(bb.temporal.snapshot(wf)) > 1 }, eventually, 10*time.Millisecond, "claim 2 is settled")
	require.Equal(t, "completed", bb.status(t, id).Status)
	runs := bb.temporal.snapshot(wf)
	require.Len(t, runs, 1, "no run started for claim 2: its claim is over (the task is completed)")
	require.Empty(t, runs[0].signals, "the run had closed")
}
