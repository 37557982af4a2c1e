package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// The run's own claim is older than claim_timeout (a long run); another
// bridge's worker w2 claims the task (attempt 2), its failure re-queues
// it, and this worker claims attempt 3 before its run is seen closed. That
// is a new attempt, counted against max_runs, not a renewal: a renewal is
// the attempt right after the run's claim. (Found by a review.)
func TestClaims_new_attempt_after_another_workers_claim_is_no_renewal(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) { c.ClaimTimeout = time.Second })
	bb.only("example.sleep")
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	wf := "task-" + id
	typeID := bb.b.types[0].ID
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.b.adm.isOpen(wf) }, eventually, 10*time.Millisecond)
	// w2 takes the task as soon as the claim times out, before this
	// bridge's renewal timer (claim_timeout + 1.5 s) fires.
	var again taskmanager.Task
	require.Eventually(t, func() bool {
		var err error
		again, err = bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w2", TaskTypeID: typeID})
		return err == nil
	}, eventually, 20*time.Millisecond)
	require.Equal(t, 2, int(again.Attempts))
	_, err := bb.api.Complete(context.Background(), again.ID, taskmanager.Completion{WorkerID: "w2", Error: "boom"})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bb.status(t, id).Attempts == 3 }, eventually, 10*time.Millisecond, "w1 claims attempt 3")
	require.Eventually(t, func() bool { return bb.b.adm.attempts(wf) == 3 }, eventually, 10*time.Millisecond)
	require.Equal(t, 2, bb.b.adm.claimed(), "attempt 3 is a new attempt (its task was re-queued by a failure)")
}
