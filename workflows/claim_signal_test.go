package workflows_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/workflows"
)

// A late signal of an older claim (attempt 1, w1) reaching a run
// that serves attempt 2 (w2) is ignored: the run reports with w2.
func TestTaskWorkflow_late_signal_of_an_older_claim_is_ignored(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "x"}, workflows.TypeOptions{})
	task, err := b.claimAfterTimeout("example.echo", "w2")
	require.NoError(t, err)
	require.EqualValues(t, 2, task.Attempts)
	in.Claim = workflows.Claim{WorkerID: "w2", Attempts: 2}
	in.Task.Attempts = 2
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 1})
	}, 0)
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", res.Status)
	require.Equal(t, "w2", res.WorkerID)
	comps := b.tm.Completions(in.Task.ID)
	require.Len(t, comps, 1)
	require.Equal(t, "w2", comps[0].WorkerID)
}
