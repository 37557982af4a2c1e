package activities_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"golang.org/x/time/rate"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

type testBundle struct {
	env  *testsuite.TestActivityEnvironment
	tm   *devserver.Server
	api  *taskmanager.Client
	acts *activities.Activities
}

func setup(t *testing.T) testBundle {
	t.Helper()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k"})
	require.NoError(t, err)
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	acts := &activities.Activities{Registry: reg, TaskManager: api, ProgressInterval: time.Nanosecond}
	acts.RegisterOn(env)
	return testBundle{env: env, tm: tm, api: api, acts: acts}
}

func (b testBundle) run(t *testing.T, typ, params string) (json.RawMessage, error) {
	t.Helper()
	val, err := b.env.ExecuteActivity(typ, activities.HandlerInput{TaskID: "1", TaskType: typ, WorkerID: "w1", Params: json.RawMessage(params)})
	if err != nil {
		return nil, err
	}
	var out json.RawMessage
	require.NoError(t, val.Get(&out))
	return out, nil
}

// The reference worker's documented results (examples/workers/python/worker.py).
func TestExamples_match_reference_worker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := []struct{ typ, params, want string }{
		{"example.echo", `{"message":"Hello, World!"}`, `{"echo":"Hello, World!","length":13}`},
		{"example.echo", `{}`, `{"echo":"","length":0}`},
		{"example.echo", `{"message":"žluťoučký"}`, `{"echo":"žluťoučký","length":9}`},
		{"example.uppercase", `{"text":"hello world"}`, `{"original":"hello world","uppercase":"HELLO WORLD"}`},
		// Python's str.upper() maps case in full: ß is SS, ﬁ is FI.
		{"example.uppercase", `{"text":"straße ﬁne"}`, `{"original":"straße ﬁne","uppercase":"STRASSE FINE"}`},
		// float(True) is 1.0 in Python.
		{"example.math.add", `{"a":true,"b":2}`, `{"a":1,"b":2,"result":3}`},
		{"example.math.add", `{"a":5,"b":3}`, `{"a":5,"b":3,"result":8}`},
		{"example.math.add", `{"a":"1.5","b":2}`, `{"a":1.5,"b":2,"result":3.5}`},
		{"example.math.add", `{}`, `{"a":0,"b":0,"result":0}`},
		{"example.sleep", `{"duration":0.2}`, `{"duration":0.2}`},
		{"example.sleep", `{"duration":0}`, `{"duration":0}`},
	}
	for _, c := range cases {
		out, err := b.run(t, c.typ, c.params)
		require.NoError(t, err, c.typ+" "+c.params)
		require.JSONEq(t, c.want, string(out), c.typ+" "+c.params)
	}
}

func TestExamples_failures_are_permanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, c := range []struct{ typ, params, msg string }{
		{"example.error", `{"message":"boom"}`, "boom"},
		{"example.error", `{}`, "Simulated error"},
		{"example.math.add", `{"a":"x","b":1}`, `could not convert string to float: "x"`},
		{"example.math.add", `{"a":[1],"b":1}`, `field "a"`},
		{"example.math.add", `{"a":null,"b":2}`, `field "a": want a number, got null`}, // float(None) fails in Python
		{"example.math.add", `{"a":1e308,"b":1e308}`, `invalid params: a + b overflows a float64`},
		{"example.echo", `{"message":5}`, `field "message"`},
		// A long value is quoted by its start only. (Found by a review.)
		{"example.math.add", `{"a":"` + strings.Repeat("x", 100_000) + `","b":1}`, `could not convert string to float: "` + strings.Repeat("x", 64) + `…"`},
		{"example.math.add", `{"a":[` + strings.Repeat("1,", 50_000) + `1],"b":1}`, `field "a": want a number, got [1,1,1,`},
	} {
		_, err := b.run(t, c.typ, c.params)
		require.Error(t, err, c.typ+" "+c.params)
		require.Contains(t, err.Error(), c.msg)
		require.Less(t, len(err.Error()), 1000, c.typ)
		var appErr *temporal.ApplicationError
		require.True(t, errors.As(err, &appErr))
		require.True(t, appErr.NonRetryable(), err.Error())
	}
}

func TestExampleSleep_is_capped_and_cancellable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		d := 1000.0
		_, err := activities.Sleep(ctx, activities.SleepParams{Duration: &d})
		done <- err
	}()
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

func TestProgress_reaches_taskmanager_with_the_claim(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.api.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: "example.sleep", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	_, err = b.api.CreateTask(ctx, "example.sleep", map[string]any{"duration": 0.5})
	require.NoError(t, err)
	task, err := b.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "1"})
	require.NoError(t, err)
	_, err = b.env.ExecuteActivity("example.sleep", activities.HandlerInput{TaskID: string(task.ID), WorkerID: "w1", Params: task.Params.Raw()})
	require.NoError(t, err)
	require.NoError(t, b.acts.Idle(ctx), "posts are sent in the background")
	calls := b.tm.ProgressCalls(string(task.ID))
	require.Len(t, calls, 1, "one progress call per step of 0.5s, throttled to at most one per interval")
	require.Equal(t, 100, calls[0].Progress)
	require.True(t, calls[0].Accepted)
}

// A TaskManager slow to take progress does not hold the handler: posts go
// in the background. Before, each due post was made on the handler's
// goroutine, up to 5 s (15 s with a claim query), and a chatty handler
// could run past its timeout. The progress post hangs until the test lets
// it go: ReportProgress must return while it hangs (a post made on the
// handler's goroutine would have ended, cut by its timeout, before
// ReportProgress returned).
func TestProgress_slow_TaskManager_does_not_hold_the_handler(t *testing.T) {
	t.Parallel()
	tm := devserver.New(devserver.Options{Style: devserver.StylePHP, APIKey: "k"})
	release := make(chan struct{})
	var hanging atomic.Int32
	hang := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if strings.Contains(r.URL.Path, "/progress") {
			hanging.Add(1)
			defer hanging.Add(-1)
			select {
			case <-release:
			case <-r.Context().Done():
				return nil, r.Context().Err()
			}
		}
		return http.DefaultTransport.RoundTrip(r)
	})
	api, err := taskmanager.New(taskmanager.Options{BaseURL: tm.Start(t), APIKey: "k", HTTPClient: &http.Client{Transport: hang}})
	require.NoError(t, err)
	task := claimed(t, api, "test.slowprogress", map[string]any{"n": 1})
	reg := activities.NewRegistry()
	var hungWhenReturned bool
	require.NoError(t, reg.Add("test.slowprogress", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		activities.ReportProgress(ctx, 50, "half")
		// The post was handed over: wait until it hangs in TaskManager.
		// Made on this goroutine, it would have ended already.
		deadline := time.Now().Add(time.Minute)
		for hanging.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		hungWhenReturned = hanging.Load() == 1
		close(release)
		return json.RawMessage(`{}`), nil
	})))
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	acts := &activities.Activities{Registry: reg, TaskManager: api}
	acts.RegisterOn(env)
	_, err = env.ExecuteActivity("test.slowprogress", activities.HandlerInput{TaskID: string(task.ID), WorkerID: "w1", Attempt: 1, Params: task.Params.Raw()})
	require.NoError(t, err)
	require.True(t, hungWhenReturned, "ReportProgress returned while its post still hung in TaskManager")
	require.NoError(t, acts.Idle(context.Background()), "the post ends in the background")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestRegistry_fails_loudly(t *testing.T) {
	t.Parallel()
	reg := activities.NewRegistry()
	h := activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil })
	require.NoError(t, reg.Add("a", h))
	require.ErrorContains(t, reg.Add("a", h), "already registered")
	require.ErrorContains(t, reg.Add(" ", h), "empty task type name")
	require.ErrorContains(t, reg.Add("b", nil), "nil handler")
	require.Panics(t, func() { reg.MustAdd("a", h) })
	require.Equal(t, []string{"a"}, reg.Names())
}

// A step's handler posts the task's progress its workflow handed it: as
// its first attempt starts, and when it succeeds; a value below one
// already posted for the claim (an activity that started late) is not.
func TestProgress_handed_by_the_workflow_is_posted_never_backwards(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.api.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: "demo.steps", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	_, err = b.api.CreateTask(ctx, "demo.steps", map[string]any{"n": 1})
	require.NoError(t, err)
	task, err := b.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "1"})
	require.NoError(t, err)
	step := func(name string, start, done *activities.Progress) {
		_, err := b.env.ExecuteActivity("example.echo", activities.HandlerInput{
			TaskID: string(task.ID), WorkerID: "w1", Attempt: int(task.Attempts), Params: json.RawMessage(`{"message":"x"}`),
			Step: name, Progress: start, ProgressDone: done,
		})
		require.NoError(t, err)
	}
	step("a", nil, &activities.Progress{Percent: 25, Message: "step a done (1/4)"})
	step("b", &activities.Progress{Percent: 50, Message: "step b started (2/4 steps done)"}, nil)
	step("late", &activities.Progress{Percent: 25, Message: "late"}, nil)
	require.NoError(t, b.acts.Idle(ctx), "posts are sent in the background; Idle waits for them")
	var seen []int
	for _, c := range b.tm.ProgressCalls(string(task.ID)) {
		require.True(t, c.Accepted)
		seen = append(seen, c.Progress)
	}
	require.Equal(t, []int{25, 50}, seen)
	st, _ := b.tm.Task(string(task.ID))
	require.Equal(t, 50, st.Progress)
}

// A step's handler that succeeded waits for its progress post (a while)
// before it returns: the next step, here in another process, posts after
// it, so TaskManager's progress does not go back when the first post is
// slow.
func TestProgress_next_step_elsewhere_posts_after(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.api.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: "demo.steps", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	_, err = b.api.CreateTask(ctx, "demo.steps", map[string]any{"n": 2})
	require.NoError(t, err)
	task, err := b.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "1"})
	require.NoError(t, err)

	other := setup(t) // a second bridge process, on the same TaskManager
	other.acts.TaskManager = b.api
	b.tm.InjectFault(devserver.Fault{Path: "/progress", Latency: 300 * time.Millisecond, Count: 1}) // the first post is slow
	step := func(env *testsuite.TestActivityEnvironment, name string, done int) {
		_, err := env.ExecuteActivity("example.echo", activities.HandlerInput{
			TaskID: string(task.ID), WorkerID: "w1", Attempt: int(task.Attempts), Params: json.RawMessage(`{"message":"x"}`),
			Step: name, ProgressDone: &activities.Progress{Percent: done, Message: name + " done"},
		})
		require.NoError(t, err)
	}
	step(b.env, "a", 50)
	step(other.env, "b", 100)
	require.NoError(t, b.acts.Idle(ctx))
	require.NoError(t, other.acts.Idle(ctx))
	var seen []int
	for _, c := range b.tm.ProgressCalls(string(task.ID)) {
		seen = append(seen, c.Progress)
	}
	require.Equal(t, []int{50, 100}, seen)
}

// requireCoalesced checks the values posted against the values due, want:
// posts go in the background, and one queued while another is being sent
// replaces any still waiting, so some values in between may be left out.
// The first and the last due are posted, and nothing else than what was
// due, in order.
func requireCoalesced(t *testing.T, want, posted []int, msgAndArgs ...any) {
	t.Helper()
	if len(want) == 0 {
		require.Empty(t, posted, msgAndArgs...)
		return
	}
	require.NotEmpty(t, posted, msgAndArgs...)
	require.Equal(t, want[0], posted[0], msgAndArgs...)
	require.Equal(t, want[len(want)-1], posted[len(posted)-1], msgAndArgs...)
	i := 0
	for _, v := range posted {
		for i < len(want) && want[i] != v {
			i++
		}
		require.Less(t, i, len(want), "posted %v, not in order among the due %v", posted, want)
		i++
	}
}

// The progress budget bounds the calls of all handlers together: updates
// over it are not posted (they still heartbeat), updates held back by the
// interval take none of it, a handler's 100 goes outside it, and a budget
// of burst 0 posts nothing. Each case runs two handlers of the same type.
func TestProgress_budget_bounds_all_handlers_together(t *testing.T) {
	t.Parallel()
	tenSteps := func(ctx context.Context, budget *rate.Limiter) {
		for i := 1; i <= 10; i++ {
			activities.ReportProgress(ctx, i*10, "step")
		}
	}
	spent := func() *rate.Limiter { // a budget of one call, spent
		l := rate.NewLimiter(0, 1)
		l.Allow()
		return l
	}
	for _, c := range []struct {
		name     string
		budget   *rate.Limiter
		interval time.Duration
		step     string
		handler  func(ctx context.Context, budget *rate.Limiter)
		want     [2][]int // each handler's posted values
	}{
		{name: "three for all, 100 aside", budget: rate.NewLimiter(0, 3), // a burst of 3, never refilled
			handler: tenSteps, want: [2][]int{{10, 20, 30, 100}, {100}}},
		{name: "none", budget: rate.NewLimiter(0, 0), handler: tenSteps},
		{name: "unbounded", handler: tenSteps,
			want: [2][]int{{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}, {10, 20, 30, 40, 50, 60, 70, 80, 90, 100}}},
		{name: "held back by the interval, no budget taken", budget: rate.NewLimiter(0, 2), interval: time.Hour,
			handler: tenSteps, want: [2][]int{{10, 100}, {10, 100}}},
		{name: "a skipped update does not restart the interval", budget: spent(), interval: time.Hour,
			handler: func(ctx context.Context, budget *rate.Limiter) {
				activities.ReportProgress(ctx, 10, "skipped the first time: no budget")
				budget.SetLimit(rate.Inf)
				activities.ReportProgress(ctx, 20, "posted the first time: budget, and nothing posted yet")
			},
			want: [2][]int{{20}, {10}}},
		{name: "a step's handler takes none", budget: rate.NewLimiter(0, 1), step: "a",
			handler: func(ctx context.Context, budget *rate.Limiter) {
				tenSteps(ctx, budget)
				if budget.Tokens() < 1 {
					panic("a step's progress took the budget")
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			reg := activities.NewRegistry()
			require.NoError(t, reg.Add("test.chatty", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
				c.handler(ctx, c.budget)
				return json.RawMessage(`{}`), nil
			})))
			var suite testsuite.WorkflowTestSuite
			env := suite.NewTestActivityEnvironment()
			acts := &activities.Activities{Registry: reg, TaskManager: b.api, ProgressInterval: cmp.Or(c.interval, time.Nanosecond), ProgressBudget: c.budget}
			acts.RegisterOn(env)
			var beats atomic.Int64
			env.SetOnActivityHeartbeatListener(func(*activity.Info, converter.EncodedValues) { beats.Add(1) })

			ctx := context.Background()
			_, err := b.api.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: "test.chatty", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
			require.NoError(t, err)
			for n := range 2 {
				_, err = b.api.CreateTask(ctx, "test.chatty", map[string]any{"n": n})
				require.NoError(t, err)
				task, err := b.api.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: "1"})
				require.NoError(t, err)
				_, err = env.ExecuteActivity("test.chatty", activities.HandlerInput{TaskID: string(task.ID), WorkerID: "w1", Step: c.step, Params: task.Params.Raw()})
				require.NoError(t, err)
				require.NoError(t, acts.Idle(ctx))
				var posted []int
				for _, p := range b.tm.ProgressCalls(string(task.ID)) {
					posted = append(posted, p.Progress)
				}
				requireCoalesced(t, c.want[n], posted, "handler %d", n+1)
			}
			require.GreaterOrEqual(t, beats.Load(), int64(2), "each handler heartbeats, posted or not (the SDK sends the first at once and batches the rest)")
		})
	}
}
