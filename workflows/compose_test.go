package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// runFlow runs steps as a demo.pipeline task with params and returns the
// task as TaskManager has it.
func runFlow(t *testing.T, b *testBundle, params any, steps []workflows.Step) (devserver.TaskState, error) {
	t.Helper()
	require.NoError(t, workflows.TypeOptions{Steps: steps}.Validate())
	in := b.claim(t, "demo.pipeline", params, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	return b.task(t, in.Task.ID), err
}

func resultOf(t *testing.T, st devserver.TaskState) map[string]json.RawMessage {
	t.Helper()
	require.Equal(t, "completed", st.Status, st.Error)
	var out map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(st.Result, &out))
	return out
}

func TestCompose_when_skips_without_an_entry(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	steps := []workflows.Step{
		{Name: "shout", Handler: "example.uppercase"},
		{Name: "loud", When: "size(steps.shout.uppercase) > 10", Handler: "example.echo", Params: map[string]any{"message": "long: {{ .steps.shout.uppercase }}"}},
		{Name: "quiet", When: "size(steps.shout.uppercase) <= 10", Handler: "example.echo", Params: map[string]any{"message": "short"}},
		{Name: "big", When: "params.n > 2", Handler: "example.echo", Params: map[string]any{"message": "n is big"}},
	}
	st, err := runFlow(t, b, map[string]any{"text": "hi", "n": 3}, steps)
	require.NoError(t, err)
	out := resultOf(t, st)
	require.NotContains(t, out, "loud", "a skipped step has no entry")
	require.JSONEq(t, `{"echo":"short","length":5}`, string(out["quiet"]))
	require.Contains(t, out, "big", "numbers compare across int and double")
}

func TestCompose_for_each_over_0_1_and_many_items(t *testing.T) {
	t.Parallel()
	var running, most atomic.Int32
	slowAdd := func(reg *activities.Registry) {
		activities.Register(reg, "test.slowadd", func(ctx context.Context, p struct{ A, B float64 }) (map[string]float64, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(20 * time.Millisecond)
			return map[string]float64{"result": p.A + p.B}, nil
		})
	}
	sums := workflows.Step{Name: "sums", ForEach: "params.numbers", MaxParallel: 2, Handler: "test.slowadd",
		Params: map[string]any{"a": "{{ .item }}", "b": "{{ .index }}"}}
	for _, c := range []struct {
		numbers []int
		want    string
	}{
		{nil, `[]`},
		{[]int{5}, `[{"result":5}]`},
		{[]int{10, 20, 30, 40, 50}, `[{"result":10},{"result":21},{"result":32},{"result":43},{"result":54}]`},
	} {
		b := setup(t, slowAdd) // one run per test environment
		st, err := runFlow(t, b, map[string]any{"numbers": append([]int{}, c.numbers...)}, []workflows.Step{sums})
		require.NoError(t, err)
		require.JSONEq(t, c.want, string(resultOf(t, st)["sums"]), "results in item order")
	}
	require.LessOrEqual(t, most.Load(), int32(2), "at most max_parallel items at once")
}

func TestCompose_for_each_failing_item_fails_the_step(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.item", func(ctx context.Context, p struct{ N int }) (struct{}, error) {
			calls.Add(1)
			if p.N == 2 {
				return struct{}{}, activities.Permanent(errors.New("two is bad"))
			}
			return struct{}{}, nil
		})
	})
	steps := []workflows.Step{
		{Name: "each", ForEach: "params.list", MaxParallel: 1, Handler: "test.item", Params: map[string]any{"n": "{{ .item }}"}},
		{Name: "never", Handler: "example.echo"},
	}
	st, err := runFlow(t, b, map[string]any{"list": []int{1, 2, 3, 4}}, steps)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Equal(t, "step each (test.item): item 1: two is bad", st.Error)
	require.Equal(t, int32(2), calls.Load(), "no item starts after one failed (max_parallel 1)")
}

func TestCompose_on_failure_after_retries_run_out(t *testing.T) {
	t.Parallel()
	var attempts atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.flaky", func(ctx context.Context, p struct{}) (struct{}, error) {
			attempts.Add(1)
			return struct{}{}, errors.New("planned")
		})
	})
	steps := []workflows.Step{
		{Name: "risky", Handler: "test.flaky", ActivityOptions: workflows.ActivityOptions{Retry: workflows.RetryOptions{MaximumAttempts: 3}},
			OnFailure: []workflows.Step{{Name: "fallback", Handler: "example.echo", Params: map[string]any{"message": "recovered from {{ .error }}"}}}},
		{Name: "after", Handler: "example.echo", Params: map[string]any{"message": "{{ .steps.fallback.echo }}"}},
	}
	st, err := runFlow(t, b, map[string]any{"x": 1}, steps)
	require.NoError(t, err)
	out := resultOf(t, st)
	require.Equal(t, int32(3), attempts.Load())
	require.JSONEq(t, `{"error":"planned"}`, string(out["risky"]))
	require.JSONEq(t, `{"echo":"recovered from planned","length":22}`, string(out["fallback"]))
	require.JSONEq(t, `{"echo":"recovered from planned","length":22}`, string(out["after"]))
}

// completeChild plays the other worker: it claims the enqueued task and
// reports an outcome, later in workflow time.
func completeChild(t *testing.T, b *testBundle, typeID taskmanager.ID, success bool, result map[string]any) {
	b.env.RegisterDelayedCallback(func() {
		ctx := context.Background()
		raw, _ := json.Marshal(result)
		for range 3 { // a failure is final once TaskManager's attempts (3) are spent
			task, err := b.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "remote", TaskTypeID: typeID})
			if err != nil {
				t.Errorf("claim the child: %v", err)
				return
			}
			comp := taskmanager.Completion{WorkerID: "remote", Success: success, Result: raw, Error: "remote broke"}
			if _, err := b.api.Complete(ctx, task.ID, comp); err != nil {
				t.Errorf("complete the child: %v", err)
			}
			if success {
				return
			}
		}
	}, 90*time.Second)
}

func registerType(t *testing.T, b *testBundle, name string) taskmanager.ID {
	t.Helper()
	r, err := b.api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: name, Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	return r.ID
}

func remoteSteps() []workflows.Step {
	return []workflows.Step{
		{Name: "remote", Enqueue: &workflows.Enqueue{Type: "remote.job", Params: map[string]any{"n": "{{ .params.n }}"}}},
		{Name: "after", Handler: "example.echo", Params: map[string]any{"message": "remote said {{ .steps.remote.answer }}"}},
	}
}

func TestCompose_enqueue_waits_for_the_other_worker(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	remote := registerType(t, b, "remote.job")
	completeChild(t, b, remote, true, map[string]any{"answer": 42})
	st, err := runFlow(t, b, map[string]any{"n": 7}, remoteSteps())
	require.NoError(t, err)
	out := resultOf(t, st)
	require.JSONEq(t, `{"answer":42}`, string(out["remote"]))
	require.JSONEq(t, `{"echo":"remote said 42","length":14}`, string(out["after"]))
	var children []devserver.TaskState
	for _, task := range b.tm.Tasks() {
		if task.Type == "remote.job" {
			children = append(children, task)
		}
	}
	require.Len(t, children, 1)
	require.JSONEq(t, `{"n":7,"_parent":"default-test-workflow-id/remote@1"}`, string(children[0].Params), "params name the parent and step")
}

// Reads of the child that fail (TaskManager unreachable) are read again,
// as reads that find it not done are: the step waits on.
func TestCompose_enqueue_reads_through_an_outage(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	remote := registerType(t, b, "remote.job")
	b.tm.InjectFault(devserver.Fault{Path: "/tasks/2", Method: "GET", Status: 503, Count: 5})
	completeChild(t, b, remote, true, map[string]any{"answer": 5})
	st, err := runFlow(t, b, map[string]any{"n": 5}, remoteSteps())
	require.NoError(t, err)
	require.JSONEq(t, `{"answer":5}`, string(resultOf(t, st)["remote"]))
}

// A timeout shorter than poll_interval ends the wait at the deadline with
// one last read, which finds the child done: the step succeeds.
func TestCompose_enqueue_last_read_at_the_deadline(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	remote := registerType(t, b, "remote.job")
	b.env.RegisterDelayedCallback(func() {
		ctx := context.Background()
		task, err := b.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "remote", TaskTypeID: remote})
		if err == nil {
			_, err = b.api.Complete(ctx, task.ID, taskmanager.Completion{WorkerID: "remote", Success: true, Result: json.RawMessage(`{"answer":9}`)})
		}
		if err != nil {
			t.Errorf("complete the child: %v", err)
		}
	}, 30*time.Second) // after the first read, before the deadline
	steps := []workflows.Step{{Name: "remote", Enqueue: &workflows.Enqueue{Type: "remote.job", Params: map[string]any{"n": 9},
		Timeout: time.Minute, PollInterval: 10 * time.Minute, MaxPollInterval: 10 * time.Minute}}}
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 9}, workflows.TypeOptions{Steps: steps})
	start := b.env.Now()
	_, err := b.run(in)
	require.NoError(t, err)
	require.JSONEq(t, `{"answer":9}`, string(resultOf(t, b.task(t, in.Task.ID))["remote"]))
	require.GreaterOrEqual(t, b.env.Now().Sub(start), time.Minute, "read at the deadline, not before")
	require.Less(t, b.env.Now().Sub(start), 10*time.Minute, "not at the next poll")
}

// Two enqueue steps of one parallel group each wait for their own task.
func TestCompose_enqueue_steps_in_a_parallel_group(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	remote := registerType(t, b, "remote.job")
	completeChild(t, b, remote, true, map[string]any{"answer": 1})
	completeChild(t, b, remote, true, map[string]any{"answer": 1})
	steps := []workflows.Step{{Name: "both", Parallel: []workflows.Step{
		{Name: "a", Enqueue: &workflows.Enqueue{Type: "remote.job", Params: map[string]any{"n": "a"}}},
		{Name: "b", Enqueue: &workflows.Enqueue{Type: "remote.job", Params: map[string]any{"n": "b"}}},
	}}}
	st, err := runFlow(t, b, map[string]any{"n": 1}, steps)
	require.NoError(t, err)
	out := resultOf(t, st)
	require.JSONEq(t, `{"answer":1}`, string(out["a"]))
	require.JSONEq(t, `{"answer":1}`, string(out["b"]))
}

// A run cancelled while an enqueue step waits reports the cancel.
func TestCompose_enqueue_wait_cancelled(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	registerType(t, b, "remote.job")
	b.env.RegisterDelayedCallback(b.env.CancelWorkflow, 45*time.Second)
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 4}, workflows.TypeOptions{Steps: remoteSteps()})
	_, err := b.run(in)
	require.Error(t, err)
	requireCancelReported(t, b, in.Task.ID, "step remote (enqueue remote.job)")
}

func TestCompose_enqueue_child_failure_fails_the_step(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	remote := registerType(t, b, "remote.job")
	completeChild(t, b, remote, false, nil)
	st, err := runFlow(t, b, map[string]any{"n": 8}, remoteSteps())
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Contains(t, st.Error, "step remote (enqueue remote.job): task")
	require.Contains(t, st.Error, "(remote.job) failed: remote broke")
}

// The create's answer is lost after TaskManager made the task (a crash
// between creating the child and recording it): the retry finds the same
// task, and there is one child.
func TestCompose_enqueue_creates_one_child_when_the_answer_is_lost(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	remote := registerType(t, b, "remote.job")
	completeChild(t, b, remote, true, map[string]any{"answer": 1})
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 9}, workflows.TypeOptions{Steps: remoteSteps()})
	// The run's first POST is the child's create: served, its answer lost.
	b.tm.InjectFault(devserver.Fault{Path: "/tasks", Method: "POST", After: true, Status: 503, Count: 1})
	_, err := b.run(in)
	require.NoError(t, err)
	resultOf(t, b.task(t, in.Task.ID))
	n := 0
	for _, task := range b.tm.Tasks() {
		if task.Type == "remote.job" {
			n++
		}
	}
	require.Equal(t, 1, n, "one child")
}

func TestCompose_wait_for_a_signal_sent_before_the_step(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow("approve", map[string]any{"by": "ada"})
	}, 0)
	steps := []workflows.Step{
		{Name: "first", Handler: "example.sleep", Params: map[string]any{"duration": 0.05}},
		{Name: "approve", WaitFor: &workflows.WaitFor{Signal: "approve", Timeout: 10 * time.Minute}},
		{Name: "after", Handler: "example.echo", Params: map[string]any{"message": "approved by {{ .steps.approve.by }}"}},
	}
	st, err := runFlow(t, b, map[string]any{"x": 1}, steps)
	require.NoError(t, err)
	out := resultOf(t, st)
	require.JSONEq(t, `{"by":"ada"}`, string(out["approve"]))
	require.JSONEq(t, `{"echo":"approved by ada","length":15}`, string(out["after"]))
}

func TestCompose_wait_for_times_out(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	steps := []workflows.Step{{Name: "approve", WaitFor: &workflows.WaitFor{Signal: "approve", Timeout: 10 * time.Minute}}}
	st, err := runFlow(t, b, map[string]any{"x": 2}, steps)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Equal(t, `step approve (wait_for approve): no signal "approve" came within 10m0s`, st.Error)
}

// A step's own handler progress (example.sleep reports up to 100 %) does
// not reach TaskManager: the task's progress only goes forward.
func TestCompose_progress_never_goes_backwards(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	steps := []workflows.Step{
		{Name: "a", Handler: "example.sleep", Params: map[string]any{"duration": 0.2}},
		{Name: "b", Handler: "example.echo", Params: map[string]any{"message": "x"}},
		{Name: "c", Handler: "example.sleep", Params: map[string]any{"duration": 0.2}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"x": 3}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)
	var seen []int
	for _, p := range b.tm.ProgressCalls(in.Task.ID) {
		seen = append(seen, p.Progress)
	}
	require.Equal(t, []int{33, 66, 100}, seen, fmt.Sprint(seen))
}

// A list literal, and a list computed over params, are lists.
func TestCompose_for_each_over_literal_and_computed_lists(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string]string{
		"[1, 2]":                         `[{"echo":"n1","length":2},{"echo":"n2","length":2}]`,
		"params.numbers.map(x, x * 2.0)": `[{"echo":"n6","length":2}]`,
		"['a', 'b'].filter(x, x != 'a')": `[{"echo":"nb","length":2}]`,
	} {
		b := setup(t, nil)
		steps := []workflows.Step{{Name: "each", ForEach: expr, Handler: "example.echo", Params: map[string]any{"message": "n{{ .item }}"}}}
		st, err := runFlow(t, b, map[string]any{"numbers": []int{3}}, steps)
		require.NoError(t, err, expr)
		require.JSONEq(t, want, string(resultOf(t, st)["each"]), expr)
	}
}

// A for_each that names a list (params.ids, steps.x.ids) keeps every digit
// of an integer a double would round (an id beyond 2^53), as templates of
// .params do: the list is read from the JSON, not through CEL. Before, the
// items went through float64 twice (CEL's variables and the side effect's
// value): 9007199254740993 reached the handler as 9007199254740992. Other
// expressions are CEL's, which sees numbers as doubles. (Found by a
// review.)
func TestCompose_for_each_keeps_large_integers_exact(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []string // items run at once: in any order
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.raw", func(ctx context.Context, p json.RawMessage) (map[string]any, error) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, string(p))
			return map[string]any{"ok": true}, nil
		})
		activities.Register(reg, "test.ids", func(ctx context.Context, p struct{}) (json.RawMessage, error) {
			return json.RawMessage(`{"ids":[9007199254740995]}`), nil
		})
	})
	steps := []workflows.Step{
		{Name: "each", ForEach: "params.ids", Handler: "test.raw", Params: map[string]any{"id": "{{ .item }}"}},
		{Name: "fetch", Handler: "test.ids"},
		{Name: "again", ForEach: "steps.fetch.ids", Handler: "test.raw", Params: map[string]any{"again": "{{ .item }}"}},
		{Name: "doubles", ForEach: "params.small.map(x, x * 2.0)", Handler: "test.raw", Params: map[string]any{"v": "{{ .item }}"}},
	}
	_, err := runFlow(t, b, json.RawMessage(`{"ids":[9007199254740993,-9007199254740995,12],"small":[1.5]}`), steps)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{`{"id":9007199254740993}`, `{"id":-9007199254740995}`, `{"id":12}`,
		`{"again":9007199254740995}`, `{"v":3}`}, seen)
}

// A for_each step without params hands every item the task's whole
// params, each written in the run's history: 1,000 items of 63 KB of
// params would pass Temporal's 50 MiB limit, which ends the run unreported.
// The step fails instead once its items' params pass
// MaxForEachParamsBytes, saying why. (Found by a review.)
func TestCompose_for_each_params_are_bounded_together(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.url", func(ctx context.Context, p json.RawMessage) (map[string]any, error) {
			calls.Add(1)
			return map[string]any{}, nil
		})
	})
	urls := make([]string, 1000)
	for i := range urls {
		urls[i] = "https://example.com/" + strings.Repeat("x", 40)
	}
	steps := []workflows.Step{{Name: "get", ForEach: "params.urls", MaxParallel: 50, Handler: "test.url"}}
	st, err := runFlow(t, b, map[string]any{"urls": urls}, steps)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Contains(t, st.Error, fmt.Sprintf("over the %d a run's history holds for a for_each step", workflows.MaxForEachParamsBytes))
	require.Less(t, calls.Load(), int64(400))
}

// An item that fails cancels the items still running.
func TestCompose_for_each_failure_cancels_running_items(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.item", func(ctx context.Context, p struct{ N int }) (struct{}, error) {
			if p.N == 0 {
				return struct{}{}, activities.Permanent(errors.New("zero"))
			}
			select { // until cancelled (or the test ends)
			case <-ctx.Done():
			case <-release:
			}
			return struct{}{}, ctx.Err()
		})
	})
	var cancelled atomic.Int32
	b.env.SetOnActivityCanceledListener(func(*activity.Info) { cancelled.Add(1) })
	steps := []workflows.Step{{Name: "each", ForEach: "params.list", MaxParallel: 3, Handler: "test.item",
		Params: map[string]any{"n": "{{ .item }}"}, ActivityOptions: workflows.ActivityOptions{HeartbeatTimeout: 5 * time.Second}}}
	st, err := runFlow(t, b, map[string]any{"list": []int{1, 2, 0}}, steps)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Equal(t, "step each (test.item): item 2: zero", st.Error)
	require.Equal(t, int32(2), cancelled.Load(), "both running items' cancellation is requested")
}

func TestCompose_enqueue_timeout_waits_the_whole_timeout(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	registerType(t, b, "remote.job")
	steps := []workflows.Step{{Name: "remote", Enqueue: &workflows.Enqueue{Type: "remote.job", Params: map[string]any{"n": 1}, Timeout: time.Minute}}}
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps})
	start := b.env.Now()
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Contains(t, b.task(t, in.Task.ID).Error, "did not end within 1m0s")
	require.GreaterOrEqual(t, b.env.Now().Sub(start), time.Minute, "not before the timeout")
}

func TestCompose_enqueue_child_gone_fails_the_step(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	registerType(t, b, "remote.job")
	// The child (task 2) is gone: its reads answer 404.
	b.tm.InjectFault(devserver.Fault{Path: "/tasks/2", Method: "GET", Status: 404, Body: `{"success":false,"error":"Task not found"}`})
	st, err := runFlow(t, b, map[string]any{"n": 2}, remoteSteps())
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Contains(t, st.Error, "step remote (enqueue remote.job)")
	require.Contains(t, st.Error, "not found")
}

// when and on_failure apply to parallel groups, nested ones too, and a
// fallback of a group gets the group's failure.
func TestCompose_groups_take_when_and_on_failure(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	steps := []workflows.Step{
		{Parallel: []workflows.Step{
			{Name: "skipped", When: "false", Parallel: []workflows.Step{{Name: "never", Handler: "example.echo"}}},
			{Name: "grp", Parallel: []workflows.Step{{Name: "boom", Handler: "example.error", Params: map[string]any{"message": "no"}}},
				OnFailure: []workflows.Step{{Name: "fb", Handler: "example.echo", Params: map[string]any{"message": "err={{ .error }}"}}}},
		}},
	}
	st, err := runFlow(t, b, map[string]any{"x": 1}, steps)
	require.NoError(t, err)
	out := resultOf(t, st)
	require.NotContains(t, out, "never")
	require.JSONEq(t, `{"error":"step boom (example.error): no"}`, string(out["grp"]))
	require.JSONEq(t, `{"echo":"err=step boom (example.error): no","length":33}`, string(out["fb"]))
}

// No step or for_each item starts once the run's history is near
// Temporal's limits: the task fails, saying why, rather than run on until
// Temporal ends the run unreported and the task stays claimed.
func TestCompose_no_step_starts_once_the_history_is_near_its_limit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		steps []workflows.Step
		want  string
	}{
		{"for_each", []workflows.Step{{Name: "each", ForEach: "params.list", MaxParallel: 1, Handler: "test.item", Params: map[string]any{"n": "{{ .item }}"}}},
			"step each (test.item): item 3: not started: the run's history holds 40960 events"},
		{"steps", []workflows.Step{{Name: "a", Handler: "test.item"}, {Name: "b", Handler: "test.item"}, {Name: "c", Handler: "test.item"}, {Name: "d", Handler: "test.item"}},
			"step d (test.item): not started: the run's history holds 40960 events"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			var b *testBundle
			b = setup(t, func(reg *activities.Registry) {
				activities.Register(reg, "test.item", func(ctx context.Context, p json.RawMessage) (struct{}, error) {
					if calls.Add(1) == 3 {
						b.env.SetCurrentHistoryLength(workflows.HistoryGuardEvents)
					}
					return struct{}{}, nil
				})
			})
			st, err := runFlow(t, b, map[string]any{"list": []int{1, 2, 3, 4, 5}}, tc.steps)
			requireErrorType(t, err, workflows.TaskFailedErrorType)
			require.Contains(t, st.Error, tc.want)
			require.Equal(t, int64(3), calls.Load(), "no handler started past the guard")
		})
	}
}

// A full history is not a step's failure to handle: on_failure does not
// catch it, and the task fails. Before, the fallbacks ran (past the guard)
// and the task was reported completed. (Found by a review.)
func TestCompose_on_failure_does_not_catch_a_full_history(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.item", func(ctx context.Context, p json.RawMessage) (struct{}, error) {
			if calls.Add(1) == 1 {
				b.env.SetCurrentHistoryLength(workflows.HistoryGuardEvents)
			}
			return struct{}{}, nil
		})
	})
	steps := []workflows.Step{
		{Name: "a", Handler: "test.item"},
		{Name: "b", Handler: "test.item", OnFailure: []workflows.Step{{Name: "fallback", Handler: "test.item"}}},
		{Name: "c", Handler: "test.item"},
	}
	st, err := runFlow(t, b, map[string]any{"x": 1}, steps)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Equal(t, int64(1), calls.Load(), "neither the fallback nor step c ran")
	require.Contains(t, st.Error, "step b (test.item): not started: the run's history holds")
}

// Near the history's size limit a for_each runs fewer items at once: each
// running item's result may be up to activities.MaxResultBytes, and all of
// them must fit. It waits for results rather than fail while items run.
func TestCompose_for_each_near_the_size_limit_runs_fewer_at_once(t *testing.T) {
	t.Parallel()
	var items atOnce
	b := setup(t, items.register)
	b.env.SetCurrentHistorySize(40 << 20) // 8 MiB left: 7 results of 1 MiB, and room
	steps := []workflows.Step{{Name: "each", ForEach: "params.list", MaxParallel: 20, Handler: "test.item", Params: map[string]any{"n": "{{ .item }}"}}}
	st, err := runFlow(t, b, map[string]any{"list": make([]int, 30)}, steps)
	require.NoError(t, err)
	require.Equal(t, "completed", st.Status)
	require.Equal(t, int64(30), items.calls.Load())
	require.LessOrEqual(t, items.most.Load(), int64(8))
}

// So does a parallel group: its steps wait for room rather than fail
// while others run.
func TestCompose_parallel_group_near_the_size_limit_runs_fewer_at_once(t *testing.T) {
	t.Parallel()
	var items atOnce
	b := setup(t, items.register)
	b.env.SetCurrentHistorySize(40 << 20)
	var group []workflows.Step
	for i := range 12 {
		group = append(group, workflows.Step{Name: fmt.Sprintf("s%d", i), Handler: "test.item"})
	}
	st, err := runFlow(t, b, map[string]any{"x": 1}, []workflows.Step{{Parallel: group}})
	require.NoError(t, err)
	require.Equal(t, "completed", st.Status)
	require.Equal(t, int64(12), items.calls.Load())
	require.LessOrEqual(t, items.most.Load(), int64(8))
}

// A parallel group of for_each steps, each wanting many items at once,
// runs: an item waits for room while its siblings' handlers run, rather
// than fail (found by a review of the first wait, which failed the
// third step at once on an empty history).
func TestCompose_group_of_wide_for_each_steps_runs(t *testing.T) {
	t.Parallel()
	var items atOnce
	b := setup(t, items.register)
	var group []workflows.Step
	for i := range 4 {
		group = append(group, workflows.Step{Name: fmt.Sprintf("each%d", i), ForEach: "params.list", MaxParallel: 60, Handler: "test.item", Params: map[string]any{"n": "{{ .item }}"}})
	}
	st, err := runFlow(t, b, map[string]any{"list": make([]int, 60)}, []workflows.Step{{Parallel: group}})
	require.NoError(t, err, st.Error)
	require.Equal(t, "completed", st.Status, st.Error)
	require.Equal(t, int64(240), items.calls.Load())
}

// A parallel group waiting for room starts no more steps once one failed:
// the failure cancels the steps still waiting (found by a review: the
// group went on starting them as room came back).
func TestCompose_group_waiting_for_room_stops_at_a_failure(t *testing.T) {
	t.Parallel()
	var slow atomic.Int64
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.boom", func(ctx context.Context, p json.RawMessage) (struct{}, error) {
			return struct{}{}, activities.Permanent(errors.New("boom"))
		})
		activities.Register(reg, "test.slow", func(ctx context.Context, p json.RawMessage) (struct{}, error) {
			slow.Add(1)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			return struct{}{}, nil
		})
	})
	b.env.SetCurrentHistorySize(40 << 20) // room for about 7 at once
	group := []workflows.Step{{Name: "boom", Handler: "test.boom"}}
	for i := range 20 {
		group = append(group, workflows.Step{Name: fmt.Sprintf("s%02d", i), Handler: "test.slow"})
	}
	st, err := runFlow(t, b, map[string]any{"x": 1}, []workflows.Step{{Parallel: group}})
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Contains(t, st.Error, "boom")
	require.Less(t, slow.Load(), int64(10), "the steps waiting for room never started")
}

// A step routed to another task queue may land a result of up to
// Temporal's 2 MiB payload limit (its worker is not the bridge's): near
// the history's limit fewer of those run at once than of the bridge's own.
func TestCompose_routed_steps_near_the_size_limit_count_2_MiB_each(t *testing.T) {
	t.Parallel()
	var items atOnce
	b := setup(t, items.register)
	b.env.SetCurrentHistorySize(40 << 20) // 8 MiB left: 3 results of 2 MiB, and room
	var group []workflows.Step
	for i := range 8 {
		group = append(group, workflows.Step{Name: fmt.Sprintf("s%d", i), Handler: "test.item", ActivityOptions: workflows.ActivityOptions{TaskQueue: "other"}})
	}
	st, err := runFlow(t, b, map[string]any{"x": 1}, []workflows.Step{{Parallel: group}})
	require.NoError(t, err, st.Error)
	require.LessOrEqual(t, items.most.Load(), int64(3))
}

// An enqueue step counts as a handler routed elsewhere does: the task it
// waits for may land a result of up to Temporal's 2 MiB payload limit.
// Near the history's limit it creates no task and fails the step, and
// beside it fewer handlers run at once. Before, the guard did not count
// it: a run of many enqueue steps could pass Temporal's limits.
func TestCompose_enqueue_steps_count_under_the_history_guard(t *testing.T) {
	t.Parallel()
	t.Run("no room", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		registerType(t, b, "remote.job")
		b.env.SetCurrentHistorySize(47 << 20) // room for a result of 1 MiB, not 2
		st, err := runFlow(t, b, map[string]any{"n": 1}, remoteSteps())
		requireErrorType(t, err, workflows.TaskFailedErrorType)
		require.Contains(t, st.Error, "step remote (enqueue remote.job): not started: the run's history holds")
		for _, task := range b.tm.Tasks() {
			require.NotEqual(t, "remote.job", task.Type, "no task created")
		}
	})
	t.Run("beside handlers", func(t *testing.T) {
		t.Parallel()
		var items atOnce
		b := setup(t, items.register)
		remote := registerType(t, b, "remote.job")
		completeChild(t, b, remote, true, map[string]any{"answer": 1})
		b.env.SetCurrentHistorySize(44 << 20) // 4 MiB left: the enqueue step's 2 and one handler's 1
		group := []workflows.Step{{Name: "remote", Enqueue: &workflows.Enqueue{Type: "remote.job", Params: map[string]any{"n": 1}}}}
		for i := range 4 {
			group = append(group, workflows.Step{Name: fmt.Sprintf("s%d", i), Handler: "test.item"})
		}
		st, err := runFlow(t, b, map[string]any{"x": 1}, []workflows.Step{{Parallel: group}})
		require.NoError(t, err, st.Error)
		require.JSONEq(t, `{"answer":1}`, string(resultOf(t, st)["remote"]))
		require.Equal(t, int64(1), items.most.Load(), "one handler at a time beside the enqueue step")
		require.Equal(t, int64(4), items.calls.Load())
	})
}

// atOnce is a test.item handler that notes the most of its calls running
// at once, each taking a moment.
type atOnce struct{ running, most, calls atomic.Int64 }

func (a *atOnce) register(reg *activities.Registry) {
	activities.Register(reg, "test.item", func(ctx context.Context, p json.RawMessage) (struct{}, error) {
		n := a.running.Add(1)
		defer a.running.Add(-1)
		for m := a.most.Load(); n > m && !a.most.CompareAndSwap(m, n); m = a.most.Load() {
		}
		a.calls.Add(1)
		time.Sleep(20 * time.Millisecond)
		return struct{}{}, nil
	})
}
