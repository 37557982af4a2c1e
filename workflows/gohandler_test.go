package workflows_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/internal/gohandlers"
	"github.com/prismq/tmbridge/workflows"
)

// A Go workflow handler whose code no longer fits its history (here a
// goroutine asks for a version the run never recorded) is the SDK's
// nondeterminism panic, not a panic of the handler: it goes on to the SDK,
// which blocks the run until code that fits picks it up, rather than
// failing the task's attempt for good.
func TestFailOnPanic_leaves_nondeterminism_to_the_SDK(t *testing.T) {
	t.Parallel()
	changed := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		workflow.Go(ctx, func(gctx workflow.Context) {
			workflow.GetVersion(gctx, "changed", 1, 1) // the run recorded no such change
		})
		return gohandlers.Goroutines(ctx, in)
	}
	h := loadHistory(t, "testdata/child-goroutines.json")
	err := goHandlerReplayer(t, changed).ReplayWorkflowHistoryWithOptions(nil, h, workflows.ReplayOptions(h))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "panicked")
}
