package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/internal/gohandlers"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// The dev stack's config, as shipped: demo.pipeline's steps, with a Python
// exec step, run through a real Temporal server.
func TestE2E_pipeline_from_example_config(t *testing.T) {
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			s := newStack(t, style)
			s.register("demo.pipeline", "example.echo")
			var ids []string
			for i := range 5 {
				ids = append(ids, s.create("demo.pipeline", map[string]any{"text": fmt.Sprintf("hello pipeline %d", i)}))
			}
			s.runBridgeWith(nil, "bridge-p", func(cfg *bridge.Config) {
				exec := cfg.Types["py.wordcount"].Exec
				exec.Dir = ".." // the command's paths are relative to the repo root
			}, nil, "--config=../examples/tmbridge.yaml")
			states := s.waitFinal(ids)
			for i, id := range ids {
				st := states[id]
				require.Equal(t, "completed", st.Status, st.Error)
				var res map[string]json.RawMessage
				require.NoError(t, json.Unmarshal(st.Result, &res))
				upper := fmt.Sprintf("HELLO PIPELINE %d", i)
				require.JSONEq(t, fmt.Sprintf(`{"original":"hello pipeline %d","uppercase":%q}`, i, upper), string(res["shout"]))
				require.JSONEq(t, fmt.Sprintf(`{"echo":%q,"length":%d}`, upper, len(upper)), string(res["count"]))
				require.JSONEq(t, `{"a":1,"b":2,"result":3}`, string(res["a"]))
				require.JSONEq(t, `{"duration":1}`, string(res["b"]))
				require.JSONEq(t, `{"words":3,"longest":"PIPELINE"}`, string(res["words"]), "the Python exec step")
			}
		})
	}
}

// A Go workflow registered for a type gets claiming and reporting from the
// bridge; a type routed to another task queue is served by another worker.
func TestE2E_go_workflow_and_routed_queue(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.custom", "ext.reverse")
	custom := s.create("demo.custom", map[string]any{"text": "abc"})
	routed := s.create("ext.reverse", map[string]any{"text": "abc"})

	// A worker of its own (any Temporal SDK would do) on another queue.
	extQueue := s.queue + "-ext"
	w := worker.New(s.tc, extQueue, worker.Options{})
	w.RegisterActivityWithOptions(func(ctx context.Context, in activities.HandlerInput) (map[string]string, error) {
		var p struct{ Text string }
		_ = json.Unmarshal(in.Params, &p)
		r := []rune(p.Text)
		for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
		return map[string]string{"reversed": string(r), "task_id": in.TaskID}, nil
	}, activity.RegisterOptions{Name: "ext.reverse"})
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)

	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(strings.Join([]string{
		"types:",
		"  demo.custom: { workflow: demo.custom }",
		"  ext.reverse: { task_queue: " + extQueue + " }",
	}, "\n")), 0o600))
	customWorkflow := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
		var up activities.UppercaseResult
		if err := workflow.ExecuteActivity(ctx, activities.TypeUppercase, in).Get(ctx, &up); err != nil {
			return nil, err
		}
		if err := workflow.Sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
		return map[string]any{"custom": up.Uppercase, "attempt": in.Attempt}, nil
	}
	s.runBridgeWith(nil, "bridge-c", nil, []bridge.Option{bridge.WithWorkflow("demo.custom", customWorkflow)}, "--config="+cfgFile)
	states := s.waitFinal([]string{custom, routed})
	require.Equal(t, "completed", states[custom].Status, states[custom].Error)
	require.JSONEq(t, `{"custom":"ABC","attempt":1}`, string(states[custom].Result))
	require.Equal(t, "completed", states[routed].Status, states[routed].Error)
	require.JSONEq(t, fmt.Sprintf(`{"reversed":"cba","task_id":%q}`, routed), string(states[routed].Result))
}

// An enqueue step waits for the task it created, through reads that find
// it not done yet, until another worker (here the test) completes it; the
// step's result is that task's. Its reads are the retries of one activity:
// the run's history does not grow with them. Saved as
// history-v11-enqueue.json (history-v9-enqueue.json: before
// history-guard-enqueue; history-v8-enqueue.json: a timer and a marker
// per read, before await-by-retries).
func TestE2E_enqueue_step_waits_for_the_other_worker(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.remote")
	remote, err := s.api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: "remote.job", Version: "1.0.0", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	id := s.create("demo.remote", map[string]any{"n": 7})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.remote:
    steps:
      - name: remote
        enqueue: { type: remote.job, params: { n: "{{ .params.n }}" }, poll_interval: 100ms, max_poll_interval: 200ms }
`), 0o600))
	s.runBridge(nil, "bridge-enqueue", "--config="+cfgFile, "--max-runs=1")
	s.waitPolled(s.prefix+id, 2)
	child, err := s.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "remote", TaskTypeID: remote.ID})
	require.NoError(t, err)
	require.JSONEq(t, fmt.Sprintf(`{"n":7,"_parent":"%s/remote@1"}`, s.prefix+id), string(child.Params))
	_, err = s.api.Complete(context.Background(), child.ID, taskmanager.Completion{WorkerID: "remote", Success: true, Result: json.RawMessage(`{"answer":42}`)})
	require.NoError(t, err)
	st := s.waitFinal([]string{id})[id]
	require.Equal(t, "completed", st.Status, st.Error)
	require.JSONEq(t, `{"remote":{"answer":42}}`, string(st.Result))
	require.NoError(t, s.tc.GetWorkflow(context.Background(), s.prefix+id, "").Get(context.Background(), nil), "the run closed")
	h := s.history(s.prefix + id)
	var awaits, timers int
	for _, ev := range h.GetEvents() {
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			if ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == activities.AwaitTaskActivityName {
				awaits++
			}
		case enumspb.EVENT_TYPE_TIMER_STARTED:
			timers++
		}
	}
	require.Equal(t, 1, awaits, "one activity for the whole wait")
	require.Zero(t, timers, "no timer per read")
	s.replay(map[string]string{"enqueue": id}, "history-v11-")
}

// On the PHP deployment, a task created with {"opts":{}} is claimed with
// "opts":[]: the README's guards for a missing key still work there, a
// template's `with index` (the php-empty-objects version, taken in the
// run's history) and a CEL `has`. Saved as
// history-v12-php-empty-objects.json.
func TestE2E_guards_on_an_empty_object_the_php_deployment_hands_back_as_a_list(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.guarded")
	id := s.create("demo.guarded", map[string]any{"opts": map[string]any{}})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.guarded:
    steps:
      - { name: tpl, handler: example.echo, params: { message: '{{ with index .params.opts "x" }}set{{ else }}unset{{ end }}' } }
      - { name: cel, when: "!has(params.opts.x)", handler: example.echo, params: { message: "x is unset" } }
`), 0o600))
	s.runBridge(nil, "bridge-php-objects", "--config="+cfgFile)
	st := s.waitFinal([]string{id})[id]
	require.Equal(t, "completed", st.Status, st.Error)
	require.JSONEq(t, `{"tpl":{"echo":"unset","length":5},"cel":{"echo":"x is unset","length":10}}`, string(st.Result))
	require.NoError(t, s.tc.GetWorkflow(context.Background(), s.prefix+id, "").Get(context.Background(), nil), "the run closed")
	require.True(t, slices.ContainsFunc(s.history(s.prefix+id).GetEvents(), func(ev *historypb.HistoryEvent) bool {
		return ev.GetEventType() == enumspb.EVENT_TYPE_MARKER_RECORDED && strings.Contains(ev.String(), "php-empty-objects")
	}), "the run took the php-empty-objects version")
	s.replay(map[string]string{"php-empty-objects": id}, "history-v12-")
}

// waitPolled waits until the run of workflow id read its enqueued task n
// times and found it not done: its tmbridge.AwaitTask activity is at
// attempt n+1.
func (s *stack) waitPolled(id string, n int) {
	s.t.Helper()
	require.Eventually(s.t, func() bool {
		d, err := s.describe(context.Background(), id, "")
		if err != nil {
			return false // not started yet
		}
		for _, a := range d.GetPendingActivities() {
			if a.GetActivityType().GetName() == activities.AwaitTaskActivityName && int(a.GetAttempt()) > n {
				return true
			}
		}
		return false
	}, 2*time.Minute, 50*time.Millisecond, "the enqueued task was read %d times", n)
}

// A Go workflow handler that panics fails its task with the panic's
// message, on the real dev server: before, the SDK's default panic policy
// retried its workflow task forever, and the task stayed claimed.
func TestE2E_go_workflow_panic_fails_the_task(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	boom := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		var m map[string]any
		//lint:ignore SA5000 the handler panics on purpose
		m["x"] = in.Attempt // assignment to a nil map
		return m, nil
	}
	id := s.goHandlerTask("demo.boom", boom)
	s.waitError(id, "workflow demo.boom panicked: assignment to entry in nil map")
}

// waitError waits until task id's error (its first attempt's, reported
// failed) holds msg.
func (s *stack) waitError(id, msg string) {
	s.t.Helper()
	require.Eventually(s.t, func() bool {
		st, ok := s.tm.Task(id)
		return ok && strings.Contains(st.Error, msg)
	}, 2*time.Minute, 100*time.Millisecond, "the first attempt is reported failed with %q", msg)
}

// A panic in a coroutine that a Go workflow handler started fails its
// task alike (workflows.GoroutinePanics): before, it retried its workflow
// task forever and the task stayed claimed.
func TestE2E_go_workflow_panic_in_its_goroutine_fails_the_task(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	boom := func(ctx workflow.Context, in activities.HandlerInput) (map[string]any, error) {
		workflow.Go(ctx, func(workflow.Context) {
			var m map[string]any
			//lint:ignore SA5000 the handler panics on purpose
			m["x"] = in.Attempt // assignment to a nil map
		})
		return nil, workflow.Sleep(ctx, time.Hour)
	}
	id := s.goHandlerTask("demo.goboom", boom)
	s.waitError(id, "workflow demo.goboom panicked: assignment to entry in nil map")
}

// A Go workflow handler that works in coroutines of its own completes its
// task, and its run's history replays, as does the one recorded before
// FailOnPanic ran handlers in a coroutine of its own (child-goroutines.json,
// replayed by the workflows tests).
func TestE2E_go_workflow_handler_with_goroutines(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register(activities.TypeUppercase)
	id := s.goHandlerTask(gohandlers.GoroutinesName, gohandlers.Goroutines)
	st := s.waitFinal([]string{id})[id]
	require.Equal(t, "completed", st.Status, st.Error)
	require.JSONEq(t, `{"results":["LEFT","RIGHT"]}`, string(st.Result))
	replayer := newReplayer(t, workflows.GoroutinePanics())
	replayer.RegisterWorkflowWithOptions(workflows.FailOnPanic(gohandlers.GoroutinesName, gohandlers.Goroutines), workflow.RegisterOptions{Name: gohandlers.GoroutinesName})
	h := s.runHistory(s.prefix+id+"/"+gohandlers.GoroutinesName, "")
	require.NoError(t, replayer.ReplayWorkflowHistoryWithOptions(nil, h, workflows.ReplayOptions(h)))
	if os.Getenv("TMBRIDGE_UPDATE_HISTORY") != "" {
		b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(h)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join("..", "workflows", "testdata", "child-goroutines-new.json"), b, 0o644))
	}
}

// A cancelled run waits for its Go workflow handler to close (the SDK
// settles a child's future only then), and reports the cancel as the
// attempt's outcome whatever the handler ended with while it stopped.
func TestE2E_cancelled_go_workflow_handler_reports_the_cancel(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	started := make(chan struct{}, 8)
	cleanup := func(ctx workflow.Context, _ activities.HandlerInput) (map[string]any, error) {
		if !workflow.IsReplaying(ctx) {
			started <- struct{}{}
		}
		_ = workflow.Sleep(ctx, time.Hour) // until cancelled
		dctx, _ := workflow.NewDisconnectedContext(ctx)
		_ = workflow.Sleep(dctx, 500*time.Millisecond) // cleaning up after the cancel
		return nil, temporal.NewNonRetryableApplicationError("cleanup after the cancel failed", "Cleanup", nil)
	}
	id := s.goHandlerTask("demo.cleanup", cleanup, "--max-runs=1")
	<-started
	c := s.cancelRun(id)
	require.Equal(t, "demo.cleanup was cancelled (its handler then ended: cleanup after the cancel failed)", c.Error)
	s.replay(map[string]string{"cancel-go-handler": id}, "history-v8-")
}

// goHandlerTask registers task type name, served by Go workflow handler
// fn (bridge.WithWorkflow, under the same name), creates one task of it
// and runs a bridge with extra flags; it returns the task's id.
func (s *stack) goHandlerTask(name string, fn any, extra ...string) string {
	s.t.Helper()
	s.register(name)
	id := s.create(name, map[string]any{"n": 1})
	cfgFile := filepath.Join(s.t.TempDir(), "tmbridge.yaml")
	require.NoError(s.t, os.WriteFile(cfgFile, []byte("types:\n  "+name+": { workflow: "+name+" }\n"), 0o600))
	s.runBridgeWith(nil, "bridge-"+name, nil, []bridge.Option{bridge.WithWorkflow(name, fn)}, append([]string{"--config=" + cfgFile}, extra...)...)
	return id
}

// A real server's history size stops a for_each before Temporal's limit:
// 80 items of 1,000 KiB results, 20 at once. The items still running when
// the history fills must fit too: the run waits for their results before
// it starts more, and fails the step once none is running and none fits.
// The task is reported failed (not left claimed by a run Temporal ended
// at 50 MiB), and its history replays. (A review found 20 at once
// overshooting the first guard, which left a fixed 10 MiB.)
func TestE2E_history_guard_fails_the_task_before_temporal_ends_the_run(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.big")
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	big := strings.Repeat("x", 1000<<10)
	var calls atomic.Int64
	activities.Register(reg, "test.big", func(ctx context.Context, p json.RawMessage) (string, error) {
		calls.Add(1)
		return big, nil
	})
	list := make([]int, 80) // 80 MB of results, were they all run
	id := s.create("demo.big", map[string]any{"list": list})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.big:
    steps:
      - { name: each, for_each: params.list, max_parallel: 20, handler: test.big, params: {} }
`), 0o600))
	stop := s.runBridge(reg, "bridge-guard", "--config="+cfgFile)
	st := s.waitFinal([]string{id})[id]
	// The run closes once its last workflow task is done, after the
	// report landed: wait for it before the bridge stops.
	require.Error(t, s.tc.GetWorkflow(context.Background(), s.prefix+id, "").Get(context.Background(), nil), "the run failed")
	stop()
	require.Equal(t, "failed", st.Status)
	require.Contains(t, st.Error, "not started: the run's history holds")
	// Each attempt's run stops at about 48 items (48 MiB of results) of 80.
	require.LessOrEqual(t, calls.Load(), int64(st.Attempts*50), "%d attempts", st.Attempts)
	h := s.history(s.prefix + id)
	require.True(t, slices.ContainsFunc(h.GetEvents(), func(ev *historypb.HistoryEvent) bool {
		return ev.GetEventType() == enumspb.EVENT_TYPE_MARKER_RECORDED && strings.Contains(ev.String(), "history-guard")
	}), "the guard's version marker is in the history")
	last := h.GetEvents()[len(h.GetEvents())-1]
	require.Equal(t, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED, last.GetEventType(), "the run failed (reported), not terminated by Temporal")
	s.replay(map[string]string{"guard": id}, "") // not saved: 48 MB
}
