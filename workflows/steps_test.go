package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/workflows"
)

// The pipeline of the issue, as written.
func demoPipeline() []workflows.Step {
	return []workflows.Step{
		{Name: "shout", Handler: "example.uppercase"},
		{Name: "count", Handler: "example.echo", Params: map[string]any{"message": "{{ .steps.shout.uppercase }}"}},
		{Parallel: []workflows.Step{
			{Name: "a", Handler: "example.math.add", Params: map[string]any{"a": 1, "b": 2}},
			{Name: "b", Handler: "example.sleep", Params: map[string]any{"duration": 0.1}},
		}},
	}
}

func TestSteps_sequence_templates_parallel(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "demo.pipeline", map[string]any{"text": "hi there"}, workflows.TypeOptions{Steps: demoPipeline()})
	res, err := b.run(in)
	require.NoError(t, err)
	require.JSONEq(t, `{
		"shout": {"original":"hi there","uppercase":"HI THERE"},
		"count": {"echo":"HI THERE","length":8},
		"a": {"a":1,"b":2,"result":3},
		"b": {"duration":0.1}
	}`, string(res.Result))
	st := b.task(t, in.Task.ID)
	require.Equal(t, "completed", st.Status)
	var progress []int
	for _, p := range b.tm.ProgressCalls(in.Task.ID) {
		progress = append(progress, p.Progress)
	}
	require.Contains(t, progress, 25, "progress is reported as steps complete")
	require.True(t, slices.IsSorted(progress), "never backwards: %v", progress)
	require.Equal(t, 100, progress[len(progress)-1])
}

func TestSteps_templates_keep_types_and_read_task_params(t *testing.T) {
	t.Parallel()
	var got atomic.Value
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.capture", func(ctx context.Context, p map[string]any) (map[string]any, error) {
			got.Store(p)
			return map[string]any{"ok": true}, nil
		})
	})
	steps := []workflows.Step{
		{Name: "add", Handler: "example.math.add", Params: map[string]any{"a": "{{ .params.x }}", "b": 2}},
		{Name: "cap", Handler: "test.capture", Params: map[string]any{
			"sum": "{{ .steps.add.result }}", "label": "sum={{ .steps.add.result }} of {{ .params.name }}", "list": []any{"{{ .params.name }}", 1},
		}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"x": 40, "name": "n1"}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"sum": 42.0, "label": "sum=42 of n1", "list": []any{"n1", 1.0}}, got.Load())
}

func TestSteps_failing_step_fails_the_task_and_names_it(t *testing.T) {
	t.Parallel()
	var after atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.after", func(ctx context.Context, p struct{}) (struct{}, error) {
			after.Add(1)
			return struct{}{}, nil
		})
	})
	steps := []workflows.Step{
		{Name: "first", Handler: "example.echo"},
		{Name: "boom", Handler: "example.error", Params: map[string]any{"message": "disk full"}},
		{Name: "never", Handler: "test.after"},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"message": "m"}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "step boom (example.error): disk full", st.Error)
	require.Zero(t, after.Load())
}

func TestSteps_step_retried_then_succeeds(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.flaky", func(ctx context.Context, p struct{}) (map[string]int32, error) {
			if n := calls.Add(1); n < 3 {
				return nil, errors.New("not yet")
			}
			return map[string]int32{"calls": calls.Load()}, nil
		})
	})
	steps := []workflows.Step{
		{Name: "flaky", Handler: "test.flaky", ActivityOptions: workflows.ActivityOptions{Local: workflows.Bool(true), Retry: workflows.RetryOptions{MaximumAttempts: 5}}},
		{Name: "echo", Handler: "example.echo"},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"message": "m"}, workflows.TypeOptions{Steps: steps, ActivityOptions: workflows.ActivityOptions{Retry: workflows.RetryOptions{MaximumAttempts: 1}}})
	res, err := b.run(in)
	require.NoError(t, err)
	var out map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(res.Result, &out))
	require.JSONEq(t, `{"calls":3}`, string(out["flaky"]))
}

func TestSteps_parallel_failure_cancels_the_others(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.block", func(ctx context.Context, p struct{}) (struct{}, error) {
			select { // blocks until cancelled (or the test ends)
			case <-ctx.Done():
			case <-release:
			}
			return struct{}{}, ctx.Err()
		})
	})
	var cancelled atomic.Value
	b.env.SetOnActivityCanceledListener(func(info *activity.Info) { cancelled.Store(info.ActivityType.Name) })
	steps := []workflows.Step{{Parallel: []workflows.Step{
		{Name: "block", Handler: "test.block", ActivityOptions: workflows.ActivityOptions{HeartbeatTimeout: time.Second}},
		{Name: "boom", Handler: "example.error", Params: map[string]any{"message": "no"}},
	}}}
	in := b.claim(t, "demo.pipeline", map[string]any{"message": "m"}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in) // returns although "block" never finishes by itself
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Equal(t, "step boom (example.error): no", b.task(t, in.Task.ID).Error)
	require.Equal(t, "test.block", cancelled.Load(), "the sibling's cancellation is requested")
}

func TestSteps_cancelled_task_reports_failure(t *testing.T) {
	t.Parallel()
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.cancelme", func(ctx context.Context, p struct{}) (struct{}, error) {
			b.env.CancelWorkflow()
			<-ctx.Done()
			return struct{}{}, ctx.Err()
		})
	})
	steps := []workflows.Step{{Name: "wait", Handler: "test.cancelme"}, {Name: "never", Handler: "example.echo"}}
	in := b.claim(t, "demo.pipeline", map[string]any{"message": "m"}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.Error(t, err)
	requireCancelReported(t, b, in.Task.ID, "step wait (test.cancelme)")
}

// requireCancelReported checks that task id's cancelled attempt was
// reported as a failure of step (so TaskManager re-queued the task).
func requireCancelReported(t *testing.T, b *testBundle, id, step string) {
	t.Helper()
	st := b.task(t, id)
	require.Equal(t, "pending", st.Status, "the cancel is reported, so TaskManager re-queues the task")
	require.Contains(t, st.Error, step)
	require.Contains(t, st.Error, "cancel")
}

func TestSteps_template_error_names_the_step(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	steps := []workflows.Step{{Name: "echo", Handler: "example.echo", Params: map[string]any{"message": "{{ .steps.nope.x }}"}}}
	in := b.claim(t, "demo.pipeline", map[string]any{"message": "m"}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Contains(t, b.task(t, in.Task.ID).Error, "step echo (example.echo)")
	require.Contains(t, b.task(t, in.Task.ID).Error, ".steps.nope")
}

func TestTypeOptions_validate_names_the_problem(t *testing.T) {
	t.Parallel()
	cases := map[string]workflows.TypeOptions{
		"steps[0].handler: a step needs a handler": {Steps: []workflows.Step{{Name: "x"}}},
		`name "a" is used twice`:                   {Steps: []workflows.Step{{Name: "a", Handler: "h"}, {Parallel: []workflows.Step{{Name: "a", Handler: "h2"}}}}},
		"retry.backoff_coefficient":                {ActivityOptions: workflows.ActivityOptions{Retry: workflows.RetryOptions{BackoffCoefficient: 0.5}}},
		"local: a local handler runs":              {ActivityOptions: workflows.ActivityOptions{Local: workflows.Bool(true), TaskQueue: "python"}},
		"workflow: set workflow or steps":          {Workflow: "w", Steps: []workflows.Step{{Handler: "h"}}},
		"template":                                 {Steps: []workflows.Step{{Handler: "h", Params: map[string]any{"x": "{{ .steps.a "}}}},
	}
	for want, o := range cases {
		err := o.Validate()
		require.Error(t, err, want)
		require.Contains(t, err.Error(), want)
	}
	require.NoError(t, workflows.TypeOptions{Steps: demoPipeline()}.Validate())
}

// Numbers in templates keep every digit, and a step named after its
// handler (example.uppercase) is read with index.
func TestSteps_templates_exact_numbers_and_dotted_names(t *testing.T) {
	t.Parallel()
	b, got := setupCapture(t)
	steps := []workflows.Step{
		{Handler: "example.uppercase", Params: map[string]any{"text": "{{ .params.name }}"}},
		{Name: "cap", Handler: "test.capture", Params: map[string]any{
			"id":    "user {{ .params.user_id }}",
			"big":   "{{ .params.big }}",
			"text":  "{{ .params.big }}!",
			"float": "{{ .params.f }}",
			"upper": `{{ index .steps "example.uppercase" "uppercase" }}`,
			"whole": `{{ index .steps "example.uppercase" }}`,
			"nums":  "{{ .params.nums }}",
		}},
	}
	params := json.RawMessage(`{"name":"ada","user_id":1234567,"big":9007199254740993,"f":0.1,"nums":[1e2,3]}`)
	in := b.claim(t, "demo.pipeline", params, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)
	require.JSONEq(t, `{
		"id": "user 1234567",
		"big": 9007199254740993,
		"text": "9007199254740993!",
		"float": 0.1,
		"upper": "ADA",
		"whole": {"original":"ada","uppercase":"ADA"},
		"nums": [1e2,3]
	}`, got.Load().(string))
	require.Contains(t, got.Load().(string), `"big":9007199254740993`, "every digit, as a number")
}

// A run started before exact templates (its history has no
// exact-templates marker) goes on rendering as it began.
func TestSteps_runs_from_before_exact_templates_render_as_they_began(t *testing.T) {
	t.Parallel()
	b, got := setupCapture(t)
	b.env.OnGetVersion("exact-templates", workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	steps := []workflows.Step{{Name: "cap", Handler: "test.capture", Params: map[string]any{"id": "user {{ .params.user_id }}", "n": "{{ .params.user_id }}"}}}
	in := b.claim(t, "demo.pipeline", map[string]any{"user_id": 1234567}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"user 1.234567e+06","n":1234567}`, got.Load().(string))
}

// Templates that blow params up past what Temporal takes fail the step.
func TestSteps_rendered_params_are_bounded(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	steps := []workflows.Step{{Name: "echo", Handler: "example.echo", Params: map[string]any{
		"message": "{{ .params.blob }}{{ .params.blob }}{{ .params.blob }}",
	}}}
	in := b.claim(t, "demo.pipeline", map[string]any{"blob": strings.Repeat("x", 700_000)}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Contains(t, b.task(t, in.Task.ID).Error, "step echo (example.echo): message: rendered params pass the 1900000 bytes a step accepts")
}

// A step with no entry (skipped by its when, a named parallel group that
// did not fail) is tested in a template with index, which reads a missing
// key as nothing: the README's guard. (.steps.loud fails the step reading
// it: a template's missing key is an error.) The README showed
// {{ with .steps.loud }}, which failed the step. (Found by a review.)
func TestSteps_guard_for_a_step_without_an_entry(t *testing.T) {
	t.Parallel()
	b, got := setupCapture(t)
	steps := []workflows.Step{
		{Name: "loud", When: "false", Handler: "test.capture"},
		{Name: "g", Parallel: []workflows.Step{{Name: "a", Handler: "example.echo", Params: map[string]any{"message": "a"}}}},
		{Name: "cap", Handler: "test.capture", Params: map[string]any{
			"loud": `{{ with index .steps "loud" }}ran{{ else }}skipped{{ end }}`,
			"g":    `{{ with index .steps "g" }}failed{{ else }}ok{{ end }}`,
		}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"x": 1}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"loud":"skipped","g":"ok"}`, got.Load().(string))
}

// setupCapture is setup with a test.capture handler that keeps the params
// it was last given, as text, in got.
func setupCapture(t *testing.T) (*testBundle, *atomic.Value) {
	t.Helper()
	got := new(atomic.Value)
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.capture", func(ctx context.Context, p json.RawMessage) (map[string]any, error) {
			got.Store(string(p))
			return map[string]any{"ok": true}, nil
		})
	})
	return b, got
}
