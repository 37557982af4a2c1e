package bridge

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/serviceerror"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// A start that failed once reads the task before it signals an open run:
// when this worker's claim timed out meanwhile and another worker (w2)
// holds the task with its own run, the claim is over, and w2's run is not
// counted as this bridge's. (Found by a review of a first version, which
// signalled the open run without reading.)
func TestStart_retried_start_of_a_claim_that_timed_out_leaves_another_workers_run(t *testing.T) {
	t.Parallel()
	clock := devserver.NewClock(time.Now())
	bb := setupBridgeClock(t, clock, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "x"})
	wf := "task-" + id
	typeID := bb.b.types[0].ID
	var once atomic.Bool
	bb.temporal.refuse = func(in workflows.TaskInput) error { // f.mu held
		if once.Swap(true) {
			return nil
		}
		// While this start fails, the claim times out and w2 takes the
		// task, starting its own run.
		clock.Add(301 * time.Second)
		again, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w2", TaskTypeID: typeID})
		if err != nil || again.Attempts != 2 {
			t.Errorf("w2 claim: %v %d", err, again.Attempts)
		}
		bb.temporal.n++
		bb.temporal.runs[wf] = append(bb.temporal.runs[wf], &fakeRun{id: wf, runID: fmt.Sprintf("run-%d", bb.temporal.n),
			memo: map[string]any{workflows.MemoAttempt: 2, workflows.MemoWorkerID: "w2"}, closed: make(chan struct{})})
		return serviceerror.NewInternal("start failed")
	}
	bb.serve(t)
	require.Eventually(t, func() bool { return once.Load() && !bb.b.adm.tracked(wf) || bb.b.adm.isOpen(wf) }, eventually, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, "w2", bb.status(t, id).ClaimedBy)
	require.False(t, bb.b.adm.isOpen(wf), "w2's run is not this bridge's: its claim (attempt 1) is over; signals: %v", bb.temporal.snapshot(wf)[0].signals)
}
