package workflows_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/internal/heldrun"
	"github.com/prismq/tmbridge/workflows"
)

// A local handler, or local step, carries its run's heldrun.Hold token
// (HandlerInput.RunToken); a regular one carries none (its input is in
// the run's history). Each run releases its token when it ends; one that
// left the worker does too (the e2e
// TestE2E_local_handler_whose_run_left_the_worker_reads_first).
func TestTaskWorkflow_local_handlers_carry_their_runs_token(t *testing.T) {
	var mu sync.Mutex
	var runs []uint64
	extra := func(reg *activities.Registry) {
		reg.MustAdd("test.run", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			in, _ := activities.TaskInfo(ctx)
			mu.Lock()
			runs = append(runs, in.RunToken)
			mu.Unlock()
			return json.RawMessage(`{}`), nil
		}))
	}
	b := setup(t, extra)
	took := func() []uint64 {
		mu.Lock()
		defer mu.Unlock()
		out := runs
		runs = nil
		return out
	}
	local := workflows.ActivityOptions{Local: workflows.Bool(true)}
	held := heldrun.Count()

	_, err := b.run(b.claim(t, "test.run", map[string]any{"n": 1}, workflows.TypeOptions{ActivityOptions: local}))
	require.NoError(t, err)
	single := took()
	require.Len(t, single, 1)
	require.NotZero(t, single[0], "a local handler carries its run's token")
	require.Equal(t, held, heldrun.Count(), "the run released its token")

	b = setup(t, extra)
	_, err = b.run(b.claim(t, "test.run", map[string]any{"n": 1}, workflows.TypeOptions{}))
	require.NoError(t, err)
	require.Equal(t, []uint64{0}, took(), "a regular handler carries none")

	b = setup(t, extra)
	steps := []workflows.Step{{Name: "a", Handler: "test.run"}, {Parallel: []workflows.Step{{Name: "b", Handler: "test.run"}, {Name: "c", Handler: "test.run"}}}}
	_, err = b.run(b.claim(t, "test.run", map[string]any{"n": 1}, workflows.TypeOptions{ActivityOptions: local, Steps: steps}))
	require.NoError(t, err)
	stepRuns := took()
	require.Len(t, stepRuns, 3)
	require.NotZero(t, stepRuns[0], "a local step carries its run's token")
	require.Equal(t, []uint64{stepRuns[0], stepRuns[0], stepRuns[0]}, stepRuns, "one token per run")
	require.NotEqual(t, single[0], stepRuns[0], "a token per run")
	require.Equal(t, held, heldrun.Count(), "each run released its token")
}
