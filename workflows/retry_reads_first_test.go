package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// A handler attempt that Temporal retries reads the task first, and runs
// no handler for a claim that is over: here the claim timed out during
// the first attempt and a worker that does not signal this run (a Python
// worker during a migration, say) claimed the task, or claimed it and
// reported its outcome. The run then ends ClaimLost and posts nothing.
// Before, the retry ran the handler beside that worker's attempt (a gap
// the README named).
func TestExactlyOnce_retried_handler_attempt_runs_no_handler_for_a_claim_over(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		local  bool
		other  func(b *testBundle, id taskmanager.ID) error // what the other worker does with its claim
		status string
	}{
		{name: "claimed by another worker", status: taskmanager.StatusClaimed},
		{name: "claimed by another worker, local", local: true, status: taskmanager.StatusClaimed},
		{name: "completed by another worker", status: taskmanager.StatusCompleted, other: func(b *testBundle, id taskmanager.ID) error {
			_, err := b.api.Complete(context.Background(), id, taskmanager.Completion{WorkerID: "w2", Success: true, Result: json.RawMessage(`{"by":"w2"}`)})
			return err
		}},
		{name: "failed back to pending by another worker", status: taskmanager.StatusPending, other: func(b *testBundle, id taskmanager.ID) error {
			_, err := b.api.Complete(context.Background(), id, taskmanager.Completion{WorkerID: "w2", Error: "w2 failed it"})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var runs atomic.Int32
			var otherErr atomic.Value
			var b *testBundle
			b = setup(t, func(reg *activities.Registry) {
				reg.MustAdd("test.flaky", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
					if runs.Add(1) > 1 {
						return json.RawMessage(`{}`), nil
					}
					// The claim times out while this attempt runs; w2 claims the task.
					in, _ := activities.TaskInfo(ctx)
					b.clock.Add(301 * time.Second)
					task, err := b.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w2", TaskTypeID: b.types["test.flaky"]})
					if err == nil && string(task.ID) != in.TaskID {
						err = errors.New("w2 claimed another task")
					}
					if err == nil && tc.other != nil {
						err = tc.other(b, task.ID)
					}
					if err != nil {
						otherErr.Store(err)
					}
					return nil, errors.New("boom")
				}))
			})
			opts := workflows.TypeOptions{}
			if tc.local {
				opts.Local = workflows.Bool(true)
			}
			in := b.claim(t, "test.flaky", map[string]any{"n": 1}, opts)
			_, err := b.run(in)
			require.Nil(t, otherErr.Load())
			requireErrorType(t, err, activities.ErrTypeClaimLost)
			require.EqualValues(t, 1, runs.Load(), "the retry ran no handler")
			for _, c := range b.tm.Completions(in.Task.ID) {
				require.Equal(t, "w2", c.WorkerID, "this run posted nothing")
			}
			st := b.task(t, in.Task.ID)
			require.Equal(t, tc.status, st.Status, "the other worker's doing stands")
		})
	}
}

// A retried attempt whose claim holds (the same worker id: this claim,
// or this bridge's renewal of it) runs its handler, as before.
func TestRetriedHandlerAttempt_runs_while_the_claim_holds(t *testing.T) {
	t.Parallel()
	for _, renewed := range []bool{false, true} {
		var runs atomic.Int32
		var b *testBundle
		b = setup(t, func(reg *activities.Registry) {
			reg.MustAdd("test.flaky", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
				if runs.Add(1) > 1 {
					return json.RawMessage(`{"ok":true}`), nil
				}
				if renewed { // the claim times out, and this worker claims the task again
					b.clock.Add(301 * time.Second)
					if _, err := b.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: b.types["test.flaky"]}); err != nil {
						return nil, activities.Permanent(err)
					}
				}
				return nil, errors.New("boom")
			}))
		})
		in := b.claim(t, "test.flaky", map[string]any{"n": 1}, workflows.TypeOptions{})
		c2 := workflows.Claim{WorkerID: "w1", Attempts: in.Claim.Attempts + 1}
		if renewed {
			// The renewal reaches the run as the bridge sends it.
			b.env.RegisterDelayedCallback(func() { b.env.SignalWorkflow(workflows.ClaimSignalName, c2) }, time.Millisecond)
		}
		res, err := b.run(in)
		require.NoError(t, err, "renewed: %v", renewed)
		require.EqualValues(t, 2, runs.Load(), "the retry ran the handler")
		require.Equal(t, taskmanager.StatusCompleted, b.task(t, in.Task.ID).Status)
		require.True(t, res.Success)
	}
}

// A retried attempt that finds the task claimed by another bridge, whose
// claim reached the run by signal, runs no handler for the old claim: the
// run continues as new for the newer one, whose handler then runs.
func TestRetriedHandlerAttempt_claim_over_with_a_newer_claim_continues_as_new(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	var otherErr atomic.Value
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		reg.MustAdd("test.flaky", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
			if runs.Add(1) == 1 {
				b.clock.Add(301 * time.Second)
				if _, err := b.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w2", TaskTypeID: b.types["test.flaky"]}); err != nil {
					otherErr.Store(err)
				}
			}
			return nil, errors.New("boom")
		}))
	})
	in := b.claim(t, "test.flaky", map[string]any{"n": 1}, workflows.TypeOptions{})
	// w2's bridge signals its claim while the first attempt backs off.
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w2", Attempts: in.Claim.Attempts + 1})
	}, 500*time.Millisecond)
	_, err := b.run(in)
	require.Nil(t, otherErr.Load())
	var can *workflow.ContinueAsNewError
	require.ErrorAs(t, err, &can, "want the run to continue as new for w2's claim")
	var next workflows.TaskInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.Equal(t, "w2", next.Claim.WorkerID)
	require.EqualValues(t, 1, runs.Load(), "no handler ran for the old claim's retry")
	require.Empty(t, b.tm.Completions(in.Task.ID))
}
