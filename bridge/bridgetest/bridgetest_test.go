package bridgetest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge/bridgetest"
)

type resizeParams struct {
	Width int `json:"width"`
}

type resizeResult struct {
	Width  int `json:"width"`
	Height int `json:"height"`
}

func resize(_ context.Context, p resizeParams) (resizeResult, error) {
	if p.Width <= 0 {
		return resizeResult{}, activities.Permanent(fmt.Errorf("width must be positive, got %d", p.Width))
	}
	return resizeResult{Width: p.Width, Height: p.Width * 3 / 4}, nil
}

func TestRun_typed_handler(t *testing.T) {
	t.Parallel()
	reg := activities.NewRegistry()
	activities.Register(reg, "image.resize", resize)
	out, err := bridgetest.Run(t, reg, "", "image.resize", map[string]any{"width": 100})
	require.NoError(t, err)
	require.JSONEq(t, `{"width":100,"height":75}`, string(out))
}

func TestRun_permanent_failure_is_TaskManagers_error_message(t *testing.T) {
	t.Parallel()
	var calls int
	reg := activities.NewRegistry()
	activities.Register(reg, "image.resize", func(ctx context.Context, p resizeParams) (resizeResult, error) {
		calls++
		return resize(ctx, p)
	})
	_, err := bridgetest.Run(t, reg, "", "image.resize", map[string]any{"width": -1})
	require.EqualError(t, err, "width must be positive, got -1")
	require.Equal(t, 1, calls, "a permanent error is not retried")

	_, err = bridgetest.Run(t, reg, "", "image.resize", map[string]any{"width": "wide"})
	require.ErrorContains(t, err, `field "width"`, "params that do not fit fail the task, naming the field")
}

// Backoff of minutes runs on the test clock: the three attempts of a real
// run would be 15 minutes apart; here the test takes milliseconds.
func TestRun_retries_with_minutes_of_backoff(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var attempts []int32
	reg := activities.NewRegistry()
	activities.Register(reg, "flaky.job", func(ctx context.Context, p struct{}) (map[string]int, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, activity.GetInfo(ctx).Attempt)
		if len(attempts) < 3 {
			return nil, errors.New("not yet")
		}
		return map[string]int{"calls": len(attempts)}, nil
	})
	config := `
types:
  flaky.job:
    retry: { initial_interval: 5m, backoff_coefficient: 2, maximum_interval: 1h, maximum_attempts: 5 }
`
	began := time.Now()
	out, err := bridgetest.Run(t, reg, config, "flaky.job", map[string]any{"n": 1})
	require.NoError(t, err)
	require.JSONEq(t, `{"calls":3}`, string(out))
	require.Equal(t, []int32{1, 2, 3}, attempts, "Temporal's retries, within one claim")
	require.Less(t, time.Since(began), 5*time.Minute, "the 5 and 10 minute waits were on the test clock")
}

func TestRun_retries_spent_fail_with_the_last_error(t *testing.T) {
	t.Parallel()
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	_, err := bridgetest.Run(t, reg, "types:\n  example.error: { retry: { initial_interval: 30m, maximum_attempts: 4 } }\n", "example.error", map[string]any{"message": "disk full"})
	require.EqualError(t, err, "disk full")
}

// The README's config, as written there, runs its multi-step type.
func TestRun_multi_step_type_from_the_README(t *testing.T) {
	t.Parallel()
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	block := regexp.MustCompile("(?s)A config file, a shorter form of the dev stack's.*?```yaml\n(.*?)```").FindSubmatch(readme)
	require.NotNil(t, block, "README: the config example")
	config := string(block[1])
	out, err := bridgetest.Run(t, reg, config, "demo.pipeline", map[string]any{"text": "hi there"})
	require.NoError(t, err)
	require.JSONEq(t, `{
		"shout": {"original":"hi there","uppercase":"HI THERE"},
		"count": {"echo":"HI THERE","length":8},
		"a": {"a":1,"b":2,"result":3},
		"b": {"duration":1}
	}`, string(out))

	_, err = bridgetest.Run(t, reg, config, "demo.pipeline", map[string]any{"text": 7})
	require.ErrorContains(t, err, "step shout (example.uppercase)")
}

// A type run by a Go workflow, registered as bridge.WithWorkflow does.
func TestRun_go_workflow_type(t *testing.T) {
	t.Parallel()
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	publish := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
		var shout activities.UppercaseResult
		if err := workflow.ExecuteActivity(ctx, activities.TypeUppercase, in).Get(ctx, &shout); err != nil {
			return nil, err
		}
		if err := workflow.Sleep(ctx, time.Hour); err != nil { // an hour on the test clock
			return nil, err
		}
		return map[string]any{"published": shout.Uppercase, "task": in.TaskID}, nil
	}
	out, err := bridgetest.Run(t, reg, "types:\n  video.publish: { workflow: video.publish }\n", "video.publish",
		map[string]any{"text": "clip"}, bridgetest.WithWorkflow("video.publish", publish))
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(out, &got))
	require.Equal(t, "CLIP", got["published"])
}

// A Go workflow's result is stored as a handler's is: an object.
func TestRun_go_workflow_results_are_objects(t *testing.T) {
	t.Parallel()
	reg := activities.NewRegistry()
	config := "types:\n  w.nil: { workflow: w.nil }\n  w.string: { workflow: w.string }\n"
	opts := []bridgetest.Option{
		bridgetest.WithWorkflow("w.nil", func(workflow.Context, activities.HandlerInput) (map[string]any, error) { return nil, nil }),
		bridgetest.WithWorkflow("w.string", func(workflow.Context, activities.HandlerInput) (string, error) { return "done", nil }),
	}
	out, err := bridgetest.Run(t, reg, config, "w.nil", map[string]any{"n": 1}, opts...)
	require.NoError(t, err)
	require.JSONEq(t, `{}`, string(out))
	out, err = bridgetest.Run(t, reg, config, "w.string", map[string]any{"n": 2}, opts...)
	require.NoError(t, err)
	require.JSONEq(t, `{"value":"done"}`, string(out))
}

// A Go workflow that panics fails its task, with the panic's message, as a
// handler activity's panic does: the task is reported, not left claimed
// while the run retries its workflow task forever.
func TestRun_go_workflow_panic_fails_the_task(t *testing.T) {
	t.Parallel()
	boom := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		var m map[string]any
		//lint:ignore SA5000 the handler panics on purpose
		m["x"] = 1 // assignment to a nil map
		return m, nil
	}
	_, err := runGoWorkflow(t, "w.boom", boom)
	require.Error(t, err)
	require.Contains(t, err.Error(), "workflow w.boom panicked: assignment to entry in nil map")
}

// A panic in a coroutine that a Go workflow started (workflow.Go) fails
// its task alike, while the workflow's own coroutine waits for it: before,
// the run retried its workflow task forever.
func TestRun_go_workflow_panic_in_its_goroutine_fails_the_task(t *testing.T) {
	t.Parallel()
	boom := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		done := false
		workflow.GoNamed(ctx, "worker", func(gctx workflow.Context) {
			var m map[string]any
			//lint:ignore SA5000 the handler panics on purpose
			m["x"] = 1 // assignment to a nil map
			done = true
		})
		_ = workflow.Await(ctx, func() bool { return done })
		return map[string]any{"done": done}, nil
	}
	_, err := runGoWorkflow(t, "w.goboom", boom)
	require.Error(t, err)
	require.Contains(t, err.Error(), "workflow w.goboom panicked: assignment to entry in nil map")
}

// A Go workflow's coroutines work as they do unwrapped: results on
// channels, a cancel-free run completing with its value.
func TestRun_go_workflow_with_goroutines_completes(t *testing.T) {
	t.Parallel()
	work := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		ch := workflow.NewChannel(ctx)
		for i := range 3 {
			workflow.Go(ctx, func(gctx workflow.Context) {
				_ = workflow.Sleep(gctx, time.Duration(3-i)*time.Second)
				ch.Send(gctx, i)
			})
		}
		var order []int
		for range 3 {
			var i int
			ch.Receive(ctx, &i)
			order = append(order, i)
		}
		return map[string]any{"order": order}, nil
	}
	out, err := runGoWorkflow(t, "w.work", work)
	require.NoError(t, err)
	require.JSONEq(t, `{"order":[2,1,0]}`, string(out))
}

// A panic in a Go workflow's coroutine after the workflow returned is not
// dropped: the run's result is decided, and the panic goes on to the SDK
// (which fails the workflow task), as without FailOnPanic.
func TestRun_go_workflow_panic_after_it_returned_is_not_dropped(t *testing.T) {
	t.Parallel()
	late := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		ready := false
		workflow.Go(ctx, func(gctx workflow.Context) {
			_ = workflow.Await(gctx, func() bool { return ready })
			panic("late")
		})
		workflow.Go(ctx, func(workflow.Context) { ready = true })
		return map[string]any{"ok": true}, nil
	}
	_, err := runGoWorkflow(t, "w.late", late)
	require.Error(t, err)
	require.Contains(t, err.Error(), "late")
}

// runGoWorkflow runs one task of type name, served by Go workflow fn under
// the same name.
func runGoWorkflow(t *testing.T, name string, fn any) (json.RawMessage, error) {
	t.Helper()
	return bridgetest.Run(t, activities.NewRegistry(), "types:\n  "+name+": { workflow: "+name+" }\n", name, map[string]any{"n": 1},
		bridgetest.WithWorkflow(name, fn))
}

// A Permanent (or any application) error wrapped with context by %w fails
// at once, with the whole message as TaskManager's error: the SDK reads
// only the error returned, so before it was retried as a plain error and
// recorded as "resize: width must be positive (type: Permanent,
// retryable: false): width must be positive". (Found by a review.)
func TestRun_wrapped_permanent_error_is_not_retried(t *testing.T) {
	var calls atomic.Int32
	reg := activities.NewRegistry()
	activities.Register(reg, "t.wrapped", func(ctx context.Context, p struct{}) (struct{}, error) {
		calls.Add(1)
		return struct{}{}, fmt.Errorf("resize: %w", activities.Permanent(errors.New("width must be positive")))
	})
	_, err := bridgetest.Run(t, reg, "", "t.wrapped", nil)
	require.EqualError(t, err, "resize: width must be positive")
	require.EqualValues(t, 1, calls.Load(), "not retried")
}

type pointerParams struct {
	Width int `json:"width"`
}

func (p *pointerParams) Validate() error {
	if p.Width <= 0 {
		return errors.New("width must be positive")
	}
	return nil
}

// A pointer params type's Validate is called, as a value type's is.
// Before, it was not: invalid params reached the handler. (Found by a
// review.)
func TestRun_pointer_params_are_validated(t *testing.T) {
	var ran atomic.Int32
	reg := activities.NewRegistry()
	activities.Register(reg, "t.ptr", func(ctx context.Context, p *pointerParams) (struct{}, error) {
		ran.Add(1)
		return struct{}{}, nil
	})
	_, err := bridgetest.Run(t, reg, "", "t.ptr", map[string]any{"width": 0})
	require.EqualError(t, err, "invalid params: width must be positive")
	require.Zero(t, ran.Load())
	_, err = bridgetest.Run(t, reg, "", "t.ptr", map[string]any{"width": 3})
	require.NoError(t, err)
}

// Go workflow code that runs past the bridge's deadlock detection between
// two yields fails here, as its task would never finish on a bridge.
// Before, bridgetest allowed it a minute. (Found by a review.)
func TestRun_go_workflow_that_never_yields_fails_as_on_a_bridge(t *testing.T) {
	t.Parallel()
	stuck := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		time.Sleep(bridgetest.DeadlockDetectionTimeout*bridgetest.RaceSlowdown + time.Second) // a mistake: not workflow.Sleep
		return map[string]any{"ok": true}, nil
	}
	out, err := bridgetest.Run(t, activities.NewRegistry(), "types:\n  t.stuck:\n    workflow: wf.stuck\n", "t.stuck", nil,
		bridgetest.WithWorkflow("wf.stuck", stuck))
	require.Error(t, err, "bridgetest said the task succeeded (%s)", out)
}

// A step's params are task data: a number written 1.0 or 1e3 in the
// config reaches the handler as a number. (Found by a review of the
// parser that keeps other keys' text: it made them strings.)
func TestRun_step_params_numbers_stay_numbers(t *testing.T) {
	reg := activities.NewRegistry()
	type p struct {
		Ratio float64 `json:"ratio"`
		Limit float64 `json:"limit"`
		On    bool    `json:"on"`
	}
	reg.MustAdd("my.scale", activities.Typed(func(_ context.Context, in p) (p, error) { return in, nil }))
	cfg := "types:\n  my.flow:\n    steps:\n      - { name: s, handler: my.scale, params: { ratio: 1.0, limit: 1e3, on: True } }\n"
	out, err := bridgetest.Run(t, reg, cfg, "my.flow", map[string]any{})
	require.NoError(t, err)
	require.JSONEq(t, `{"s":{"ratio":1,"limit":1000,"on":true}}`, string(out))
}

// Run takes the bridge's production config: its task_types may name
// types whose handlers this test does not register. (Found by a review:
// the check that task_types can run failed such a test.)
func TestRun_takes_a_production_config_with_task_types(t *testing.T) {
	reg := activities.NewRegistry()
	reg.MustAdd("img.resize", activities.Typed(func(_ context.Context, in map[string]any) (map[string]any, error) { return in, nil }))
	out, err := bridgetest.Run(t, reg, "task_types: [img.resize, img.thumbnail]\n", "img.resize", map[string]any{"w": 1})
	require.NoError(t, err)
	require.JSONEq(t, `{"w":1}`, string(out))
}

// fatalTB records the first Fatalf and ends the goroutine, as testing.T's
// does; everything else goes to the real test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runFatal runs bridgetest.Run with a TB that records its Fatalf.
func runFatal(t *testing.T, opts ...bridgetest.Option) string {
	t.Helper()
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		reg := activities.NewRegistry()
		activities.RegisterExamples(reg)
		_, _ = bridgetest.Run(tb, reg, "types:\n  video.publish: { workflow: video.publish }\n", "video.publish", map[string]any{}, opts...)
	}()
	<-done
	return tb.msg
}

// A Go workflow is registered as the bridge registers it: a name given
// twice, a nil function or a name of the bridge's own fail the test, as
// they fail bridge.New. Before, bridgetest registered it as it was: the
// second of two replaced the first, and a nil one failed only when run.
func TestRun_go_workflow_registration_mistakes_fail_the_test(t *testing.T) {
	t.Parallel()
	flow := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) { return nil, nil }
	var nilFlow func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error)
	require.Contains(t, runFatal(t, bridgetest.WithWorkflow("video.publish", flow), bridgetest.WithWorkflow("video.publish", flow)),
		`WithWorkflow: ["video.publish"] given twice`)
	require.Contains(t, runFatal(t, bridgetest.WithWorkflow("video.publish", nilFlow)), `workflow "video.publish": nil workflow function`)
	require.Contains(t, runFatal(t, bridgetest.WithWorkflow("video.publish", flow), bridgetest.WithWorkflow("tmbridge.mine", flow)),
		`workflow "tmbridge.mine": names starting with "tmbridge." are the bridge's own`)
}
