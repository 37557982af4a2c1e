package workflows_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/workflows"
)

// Histories the previous release (390d8ec) recorded on a dev server replay
// through this code: multi-step flows whose templates and expressions meet
// this release's bounds (a template over MaxStepParamsBytes, a for_each
// whose failed item's params counted toward its bound, PHP's empty
// objects, whens in a group, fallbacks), and a Go workflow handler that
// fails. (Recorded by a reviewer's throwaway test against the code at
// 390d8ec; the for_each one failed to replay before bounded-render.)
func TestReplay_histories_of_the_previous_release(t *testing.T) {
	for _, name := range []string{"flow", "big", "gofail", "foreach"} {
		t.Run(name, func(t *testing.T) {
			r := newReplayer(t)
			h := loadHistory(t, "testdata/release-390d8ec/"+name+".json")
			require.NoError(t, r.ReplayWorkflowHistoryWithOptions(nil, h, workflows.ReplayOptions(h)))
		})
	}
	t.Run("gofail-child", func(t *testing.T) {
		r := newReplayer(t, workflows.GoroutinePanics())
		r.RegisterWorkflowWithOptions(workflows.FailOnPanic("rv.gofail", func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
			_ = workflow.Sleep(ctx, 1)
			return nil, errors.New("go handler failed on purpose")
		}), workflow.RegisterOptions{Name: "rv.gofail"})
		h := loadHistory(t, "testdata/release-390d8ec/gofail-child.json")
		require.NoError(t, r.ReplayWorkflowHistoryWithOptions(nil, h, workflows.ReplayOptions(h)))
	})
}
