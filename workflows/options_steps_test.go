package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/workflows"
)

// A step's fixed params (no template) reach its handler as written, as
// the README says ("Numbers are exact"). Before, the workflow input's
// params were decoded as float64: 9007199254740993 became …992. (Found by
// a review.)
func TestSteps_fixed_large_integer_in_params_is_exact(t *testing.T) {
	t.Parallel()
	b, got := setupCapture(t)
	steps := []workflows.Step{{Name: "cap", Handler: "test.capture", Params: map[string]any{
		"fixed":    int64(9007199254740993),
		"rendered": "{{ .params.id }}",
	}}}
	_, err := runFlow(t, b, map[string]any{"id": int64(9007199254740993)}, steps)
	require.NoError(t, err)
	require.Equal(t, `{"fixed":9007199254740993,"rendered":9007199254740993}`, got.Load().(string))
}

// Options set on a parallel group (task_queue, timeouts, retry) are its
// steps' defaults. Before, they were accepted at load and applied to
// nothing: the steps ran with the type's options. (Found by a review.)
func TestSteps_options_on_a_parallel_group_are_its_steps_defaults(t *testing.T) {
	t.Parallel()
	var attempts atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.flaky", func(ctx context.Context, p struct{}) (struct{}, error) {
			if attempts.Add(1) == 1 {
				return struct{}{}, errors.New("first attempt fails")
			}
			return struct{}{}, nil
		})
	})
	steps := []workflows.Step{{Name: "grp",
		ActivityOptions: workflows.ActivityOptions{Retry: workflows.RetryOptions{MaximumAttempts: 1}},
		Parallel:        []workflows.Step{{Name: "m", Handler: "test.flaky"}, {Name: "n", Handler: "example.echo"}}}}
	require.NoError(t, workflows.TypeOptions{Steps: steps}.Validate())
	in := b.claim(t, "demo.pipeline", map[string]any{"message": "x"}, workflows.TypeOptions{Steps: steps})
	_, _ = b.run(in)
	require.Equal(t, int32(1), attempts.Load(), "the group's retry.maximum_attempts: 1 holds for its step")
}

// `params: {}` is a step with params (none), not a step without params:
// its handler gets {}, not the task's params. Before, the workflow input
// dropped the empty map, and the step took the task's. (Found by a
// review.)
func TestSteps_empty_params_are_not_the_tasks_params(t *testing.T) {
	t.Parallel()
	b, got := setupCapture(t)
	steps := []workflows.Step{{Name: "cap", Handler: "test.capture", Params: map[string]any{}}}
	_, err := runFlow(t, b, map[string]any{"secret": "task-only"}, steps)
	require.NoError(t, err)
	require.Equal(t, `{}`, got.Load().(string))
}

// A step that clears its type's non_retryable_error_types (`[]`) retries
// every error. Before, the workflow input dropped the empty list and the
// step took the type's again. (Found by a review.)
func TestSteps_step_clearing_non_retryable_types_retries(t *testing.T) {
	t.Parallel()
	var attempts atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.flaky", func(ctx context.Context, p struct{}) (struct{}, error) {
			if attempts.Add(1) == 1 {
				return struct{}{}, temporal.NewApplicationError("busy", "Busy")
			}
			return struct{}{}, nil
		})
	})
	opts := workflows.TypeOptions{
		ActivityOptions: workflows.ActivityOptions{Retry: workflows.RetryOptions{NonRetryableErrorTypes: []string{"Busy"}}},
		Steps: []workflows.Step{{Name: "s", Handler: "test.flaky",
			ActivityOptions: workflows.ActivityOptions{Retry: workflows.RetryOptions{NonRetryableErrorTypes: []string{}}}}},
	}
	require.NoError(t, opts.Validate())
	require.Empty(t, opts.WithDefaults().Steps[0].Retry.NonRetryableErrorTypes, "the bridge resolves the step's list as empty")
	in := b.claim(t, "demo.pipeline", map[string]any{"x": 1}, opts)
	_, err := b.run(in)
	require.NoError(t, err, "the step's Busy error is retried")
	require.Equal(t, int32(2), attempts.Load())
}

// A parallel group's params would reach none of its steps: refused.
func TestSteps_params_on_a_parallel_group_are_refused(t *testing.T) {
	t.Parallel()
	steps := []workflows.Step{{Name: "grp", Params: map[string]any{"n": 1},
		Parallel: []workflows.Step{{Name: "a", Handler: "example.echo"}, {Name: "b", Handler: "example.echo"}}}}
	err := workflows.TypeOptions{Steps: steps}.Validate()
	require.ErrorContains(t, err, "params: a parallel group has none")
}

// TaskManager's PHP deployment hands an empty object in params back as []
// (the bridge's handlers read it as {}): the README's guards for a missing
// key work on it, in CEL and in templates. A template that renders as it
// is keeps its empty lists. Before, both guards failed the step.
// (Found by a review.)
func TestSteps_guards_work_on_an_empty_object_php_hands_back_as_a_list(t *testing.T) {
	t.Parallel()
	for _, s := range []workflows.Step{
		{Name: "cel", When: "!has(params.opts.x)", Handler: "test.capture", Params: map[string]any{"v": "unset", "items": "{{ .params.items }}"}},
		{Name: "tpl", Handler: "test.capture", Params: map[string]any{"v": `{{ with index .params.opts "x" }}set{{ else }}unset{{ end }}`, "items": "{{ .params.items }}"}},
	} {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			b, got := setupCapture(t)
			st, err := runFlow(t, b, map[string]any{"opts": map[string]any{}, "items": []any{}}, []workflows.Step{s})
			require.NoError(t, err, st.Error)
			require.JSONEq(t, `{"v":"unset","items":[]}`, got.Load().(string))
		})
	}
}

// The second rendering reads as objects only the empty lists the template
// reads as objects: a real [] in the same template stays one. (Found by a
// review of the first fix, which read every empty list as an object.)
func TestSteps_php_empty_object_guard_keeps_a_real_empty_list_in_a_template(t *testing.T) {
	t.Parallel()
	b, got := setupCapture(t)
	s := workflows.Step{Name: "tpl", Handler: "test.capture", Params: map[string]any{
		"tags": `{{ or (index .params.opts "tags") .params.tags }}`,
	}}
	st, err := runFlow(t, b, map[string]any{"opts": map[string]any{}, "tags": []any{}}, []workflows.Step{s})
	require.NoError(t, err, st.Error)
	require.JSONEq(t, `{"tags":[]}`, got.Load().(string))
}

// The same in CEL: a `when` true on the task's params is true.
func TestSteps_php_empty_object_guard_keeps_a_real_empty_list_in_cel(t *testing.T) {
	t.Parallel()
	b, got := setupCapture(t)
	s := workflows.Step{Name: "cel", When: `!has(params.opts.x) && params.tags == []`, Handler: "test.capture", Params: map[string]any{"v": "ran"}}
	st, err := runFlow(t, b, map[string]any{"opts": map[string]any{}, "tags": []any{}}, []workflows.Step{s})
	require.NoError(t, err, st.Error)
	require.NotNil(t, got.Load(), "the step ran (opts is {}, tags is [] in the task)")
}

// A decimal of more digits than a float64 holds is a number in templates:
// it compares and formats as one. (A review found that keeping its digits
// made it a json.Number, which neither does: that change was undone.)
func TestSteps_long_decimal_compares_as_a_number(t *testing.T) {
	t.Parallel()
	b, got := setupCapture(t)
	s := workflows.Step{Name: "s", Handler: "test.capture", Params: map[string]any{
		"v": `{{ if gt .params.x 0.5 }}big{{ else }}small{{ end }}`,
		"f": `{{ printf "%.2f" .params.x }}`,
	}}
	st, err := runFlow(t, b, json.RawMessage(`{"x":0.12345678901234567891}`), []workflows.Step{s})
	require.NoError(t, err, st.Error)
	require.JSONEq(t, `{"v":"small","f":"0.12"}`, got.Load().(string))
}

// The PHP {} guard works on what is read through $, through dot as with
// and range rebind it, and through a CEL comprehension variable. (Found
// by a review of the fix that read only paths from the root.)
func TestSteps_php_empty_object_guard_through_dollar_with_range_and_comprehensions(t *testing.T) {
	t.Parallel()
	for _, s := range []workflows.Step{
		{Name: "dollar", Handler: "test.capture", Params: map[string]any{"v": `{{ range .params.ids }}{{ with index $.params.opts "x" }}set{{ else }}unset{{ end }}{{ end }}`}},
		{Name: "with", Handler: "test.capture", Params: map[string]any{"v": `{{ with .params }}{{ with index .opts "x" }}set{{ else }}unset{{ end }}{{ end }}`}},
		{Name: "range", Handler: "test.capture", Params: map[string]any{"v": `{{ range .params.items }}{{ with index .opts "x" }}set{{ else }}unset{{ end }}{{ end }}`}},
		{Name: "cel", When: "params.items.all(i, !has(i.opts.x))", Handler: "test.capture", Params: map[string]any{"v": "unset"}},
	} {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			b, got := setupCapture(t)
			st, err := runFlow(t, b, map[string]any{"opts": map[string]any{}, "ids": []any{1}, "items": []any{map[string]any{"opts": map[string]any{}}}}, []workflows.Step{s})
			require.NoError(t, err, st.Error)
			require.JSONEq(t, `{"v":"unset"}`, got.Load().(string))
		})
	}
}
