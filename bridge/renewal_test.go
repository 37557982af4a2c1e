package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// adoptedRun claims task id as w1 in TaskManager and opens its run in the
// fake Temporal, as a process of w1 that stopped left it.
func adoptedRun(t *testing.T, bb *bridgeBundle, typ, id string) {
	t.Helper()
	ti := slices.IndexFunc(bb.b.types, func(s servedType) bool { return s.Name == typ })
	got, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[ti].ID})
	require.NoError(t, err)
	require.Equal(t, id, string(got.ID))
	opts := client.StartWorkflowOptions{ID: "task-" + id, Memo: map[string]any{workflows.MemoWorkerID: "w1", workflows.MemoAttempt: int(got.Attempts)}}
	_, err = bb.temporal.ExecuteWorkflow(context.Background(), opts, workflows.TaskWorkflowName, workflows.TaskInput{Claim: workflows.Claim{WorkerID: "w1", Attempts: int(got.Attempts)}})
	require.NoError(t, err)
}

// A run found open at start fills max_in_flight: its claim cannot be
// renewed (no room), and no loop is woken for it, so that none waits in
// reserve to claim whatever there is once the run ends (nothing: an empty
// claim, on PHP a 500 and an error-log line). Before, every sweep after
// claim_timeout woke one more loop. (Found by a review.)
func TestSweep_no_wake_for_an_expired_claim_without_room(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) {
		c.ClaimTimeout = time.Second
		c.MaxInFlight = 1
	})
	bb.only("example.sleep")
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	adoptedRun(t, bb, "example.sleep", id)
	bb.serve(t)
	waiting := func() int {
		s := bb.b.scout
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.typ("example.sleep").waiting)
	}
	// Sweeps every 0.5 s; the claim is seen expired after 1 s.
	time.Sleep(4 * time.Second)
	t.Logf("loops waiting for the scout: %d of %d; claim calls so far %d", waiting(), ClaimsPerType, bb.tm.Stats().ClaimCalls)
	// The run reports: the task is completed, its slot comes back.
	_, err := bb.api.Complete(context.Background(), taskmanager.ID(id), taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{"ok":true}`)})
	require.NoError(t, err)
	bb.b.reported("task-"+id, 1, nil)
	bb.temporal.close("task-" + id)
	time.Sleep(time.Second)
	st := bb.tm.Stats()
	// Before the fix, each sweep after claim_timeout woke one more loop:
	// all ClaimsPerType claimed once the slot came back. One may still:
	// a sweep whose listing was taken before the task completed, and
	// handled after its slot came back, wakes a loop for the expired
	// claim (seen on a loaded machine).
	require.LessOrEqual(t, st.ClaimCalls-st.Claimed, 1, "empty claims (PHP: 500 each) with nothing pending; claim calls %d", st.ClaimCalls)
}

// Another worker's expired claim of a type this bridge does not serve
// leaves no account of that type in the scout. Before, the wake created
// one, kept for ever. (Found by a review.)
func TestScout_expired_claim_of_a_type_not_served_leaves_no_account(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) { c.ClaimTimeout = time.Second })
	r, err := bb.api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: "tenant.export", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	bb.only("example.echo")
	bb.create(t, "tenant.export", map[string]any{"n": 1})
	_, err = bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w2", TaskTypeID: r.ID})
	require.NoError(t, err)
	bb.serve(t)
	time.Sleep(3 * time.Second) // sweeps every 0.5 s, the claim expired after 1 s
	bb.b.scout.mu.Lock()
	defer bb.b.scout.mu.Unlock()
	require.Equal(t, []string{"example.echo"}, slices.Sorted(maps.Keys(bb.b.scout.types)))
}

// --max-runs counts new tasks, not a claim of a task whose run is open
// here (a renewal): a bridge restarted over a long run (--max-runs 1), or
// whose own long task is renewed (--max-runs 2), still runs its next new
// task. Before, the renewal spent the budget and claiming stopped.
// (Found by a review.)
func TestClaims_renewal_does_not_count_against_max_runs(t *testing.T) {
	t.Parallel()
	for _, adopted := range []bool{true, false} {
		t.Run(fmt.Sprintf("found at start %v", adopted), func(t *testing.T) {
			t.Parallel()
			maxRuns := 2 // the long task and the new one
			if adopted {
				maxRuns = 1 // the new one: the long task was claimed by an earlier process
			}
			bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) {
				c.ClaimTimeout, c.MaxRuns = time.Second, maxRuns
			})
			bb.only("example.sleep", "example.echo")
			id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
			if adopted {
				adoptedRun(t, bb, "example.sleep", id)
			}
			bb.serve(t)
			require.Eventually(t, func() bool {
				rs := bb.temporal.snapshot("task-" + id)
				return len(rs) == 1 && len(rs[0].signals) >= 1
			}, eventually, 5*time.Millisecond, "the long task's claim is renewed")
			fresh := bb.create(t, "example.echo", map[string]any{"message": "the last of --max-runs"})
			require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+fresh)) == 1 }, eventually, 5*time.Millisecond, "the new task runs")
			require.Equal(t, maxRuns, bb.b.adm.claimed())
			// The metrics tell a renewal from a new task (an alert on
			// tasks held without progress counts only new ones).
			require.GreaterOrEqual(t, counterValue(t, bb.b.metrics.claims.WithLabelValues("example.sleep", "renewed")), 1.0)
			newClaims := 1.0
			if adopted {
				newClaims = 0
			}
			require.Equal(t, newClaims, counterValue(t, bb.b.metrics.claims.WithLabelValues("example.sleep", "claimed")))
		})
	}
}

// A task whose outcome another bridge's worker reported (a failure:
// TaskManager queues it again) is claimed again here while this bridge
// still counts its run open: that is a new attempt, counted against
// --max-runs and as claimed, not a renewal (no claim of the run could
// have timed out yet). Before, it was a renewal, and a bridge with
// --max-runs ran more tasks than that.
func TestClaims_task_queued_again_after_a_failure_reported_elsewhere_is_a_new_claim(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP}, func(c *Config) { c.ClaimTimeout = time.Hour })
	bb.only("example.sleep")
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.b.adm.isOpen("task-" + id) }, eventually, 5*time.Millisecond, "the run is open")
	// Another bridge's worker ran the report: the task fails, is queued
	// again, and this bridge has not seen its run close.
	_, err := bb.api.Complete(context.Background(), taskmanager.ID(id), taskmanager.Completion{WorkerID: "w1", Success: false, Error: "failed on another bridge"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) >= 1 && rs[0].signals[len(rs[0].signals)-1].Attempts == 2
	}, eventually, 5*time.Millisecond, "the new attempt reaches the run")
	require.Equal(t, 2, bb.b.adm.claimed(), "two attempts of the task: two of --max-runs")
	require.Equal(t, 2.0, counterValue(t, bb.b.metrics.claims.WithLabelValues("example.sleep", "claimed")))
	require.Equal(t, 0.0, counterValue(t, bb.b.metrics.claims.WithLabelValues("example.sleep", "renewed")))
}
