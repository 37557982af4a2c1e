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

// A template that needs the PHP-empty-object re-render and passes the
// budget in it: a run from before the bound renders as it did, and a new
// run's step fails saying why (not with the first render's error).
func TestSteps_tolerant_render_past_the_work_budget(t *testing.T) {
	t.Parallel()
	steps := []workflows.Step{{Name: "esc", Handler: "example.echo",
		Params: map[string]any{"message": `{{ range .params.a }}{{ $_ := html $.params.big }}{{ end }}{{ with index .params.opts "x" }}{{ . }}{{ end }}done`}}}
	params := map[string]any{"a": make([]int, 5), "big": strings.Repeat("a", 1<<20), "opts": []any{}}

	old := setup(t, nil)
	old.env.OnGetVersion("template-work", workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	st, err := runFlow(t, old, params, steps)
	require.NoError(t, err, st.Error)
	require.Equal(t, "completed", st.Status, st.Error)

	b := setup(t, nil)
	st, _ = runFlow(t, b, params, steps)
	require.Contains(t, st.Error, "units of work")
}

// A step past the budget fails; its on_failure fallback renders with a
// budget of its own, and handles the failure.
func TestSteps_fallback_of_a_step_past_the_work_budget_runs(t *testing.T) {
	t.Parallel()
	steps := []workflows.Step{{Name: "esc", Handler: "example.echo",
		Params:    map[string]any{"message": "{{ range .params.a }}{{ $_ := html $.params.big }}{{ end }}done"},
		OnFailure: []workflows.Step{{Name: "fb", Handler: "example.echo", Params: map[string]any{"message": "failed: {{ .error }}"}}}}}
	params := map[string]any{"a": make([]int, 13), "big": strings.Repeat("a", 1<<20)}
	b := setup(t, nil)
	st, err := runFlow(t, b, params, steps)
	require.NoError(t, err, st.Error)
	require.Equal(t, "completed", st.Status, st.Error)
}
