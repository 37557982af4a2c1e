package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A task re-queued after a failure (its run, this worker's, closed) is
// claimed again (attempts 2): its start reads the task first. When GET
// /tasks/{id} answers 2xx garbage, the run is started without the read,
// as a first claim's is. Before, the start retried for ever: no run, and
// the ticket (a MaxPendingStarts place and a max_in_flight slot) never
// came back, while the sweep skipped the task as starting. (Found by a
// review.)
func TestStart_requeued_task_whose_read_does_not_decode_starts(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "x"})
	wf := "task-" + id
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot(wf)) == 1 }, eventually, 10*time.Millisecond)
	// The run reports a failure (re-queued, attempts 1 < 3) and closes.
	bb.temporal.close(wf)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[{"id":` + id + `,"attempts":"many"}]}}`})
	_, err := bb.api.Complete(context.Background(), taskmanager.ID(id), taskmanager.Completion{WorkerID: "w1", Success: false, Error: "boom"})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bb.status(t, id).Attempts == 2 }, eventually, 10*time.Millisecond, "claimed again")
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot(wf)) == 2 }, 15*time.Second, 20*time.Millisecond,
		"the claim's run starts (in flight now: %d)", bb.b.adm.inFlight())
}
