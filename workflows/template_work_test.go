package workflows_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/workflows"
)

// A step whose templates pass the work budget of their workflow task
// fails, saying so, with the change recorded (template-work); a run from
// before the bound (no such marker in its history) renders as it did.
func TestSteps_template_past_the_work_budget(t *testing.T) {
	t.Parallel()
	steps := []workflows.Step{{Name: "esc", Handler: "example.echo",
		Params: map[string]any{"message": "{{ range .params.a }}{{ $_ := html $.params.big }}{{ end }}done"}}}
	params := map[string]any{"a": make([]int, 13), "big": strings.Repeat("a", 1<<20)}

	b := setup(t, nil)
	st, err := runFlow(t, b, params, steps)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Contains(t, st.Error, "step esc (example.echo): message: the templates of this workflow task did more than 400000000 units of work")

	old := setup(t, nil)
	old.env.OnGetVersion("template-work", workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	st, err = runFlow(t, old, params, steps)
	require.NoError(t, err)
	require.Equal(t, "completed", st.Status, st.Error)
}
