package activities

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
)

// stubborn is a handler that ignores its context: it says when it starts
// (with its params) and returns only once release is closed.
type stubborn struct {
	started chan string
	release chan struct{}
}

func newStubborn() *stubborn {
	return &stubborn{started: make(chan string, 8), release: make(chan struct{})}
}

func (s *stubborn) Handle(_ context.Context, params json.RawMessage) (json.RawMessage, error) {
	s.started <- string(params)
	<-s.release
	return json.RawMessage(`{"ok":true}`), nil
}

// stoppingEnv is an activity environment with the given root context:
// cancelling it cancels the running handler's context, as a cancel of its
// run does.
func stoppingEnv(root context.Context) *testsuite.TestActivityEnvironment {
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.SetWorkerOptions(worker.Options{BackgroundActivityContext: root})
	env.SetTestTimeout(time.Minute) // a local activity's deadline: not the testsuite's 3 s, which a loaded machine passes
	return env
}

// stopStubborn runs h for in as a local activity, then cancels it as a
// cancel of its run does: the activity ends at once (the SDK does not wait
// for the handler), and h goes on until its release.
func stopStubborn(t *testing.T, a *Activities, h *stubborn, in HandlerInput) {
	t.Helper()
	root, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() {
		_, err := stoppingEnv(root).ExecuteLocalActivity(a.handlerActivity("t.stubborn", h), in)
		ended <- err
	}()
	select {
	case <-h.started:
	case err := <-ended:
		t.Fatalf("the handler did not start: %v", err)
	}
	cancel()
	require.True(t, temporal.IsCanceledError(<-ended), "the SDK settles a cancelled local activity at once")
}

// A cancelled local handler's activity ends at once (the SDK does not
// wait for the handler), so its run reports the cancel and the task's
// next claim may start its handler in the same bridge while the first
// one still runs. The second waits until the first returned.
func TestHandler_does_not_start_beside_a_stopped_one_of_the_same_task(t *testing.T) {
	t.Parallel()
	h := newStubborn()
	waiting := make(chan int, 1)
	a := &Activities{}
	a.handlers.waiting = func(n int) { waiting <- n }
	in := HandlerInput{TaskID: "7", TaskType: "t.stubborn", WorkerID: "w", Attempt: 1, Params: json.RawMessage(`{"n":1}`)}

	stopStubborn(t, a, h, in)

	in.Attempt = 2 // the next claim's run: another run, another execution
	second := make(chan error, 1)
	go func() {
		leave, err := a.handlers.enter(context.Background(), in, "next-run", "1", a.logger())
		if err == nil {
			_, err = h.Handle(context.Background(), in.Params)
			leave()
		}
		second <- err
	}()
	select {
	case n := <-waiting:
		require.Equal(t, 1, n)
	case <-h.started:
		t.Fatal("the next claim's handler started beside the stopped one")
	case err := <-second:
		t.Fatalf("the next claim's handler did not wait: %v", err)
	}
	close(h.release) // the first handler returns at last
	<-h.started
	require.NoError(t, <-second)
	a.handlers.mu.Lock()
	defer a.handlers.mu.Unlock()
	require.Empty(t, a.handlers.m, "every handler left")
}

// Handlers of one task whose contexts are live are siblings (a for_each
// step's items, even two with the same params; two steps of a parallel
// group): they run at once, as do those of other work beside a stopped
// one. An execution of the same activity of the same run (a local
// activity run again after its workflow task failed: the SDK does not
// stop the first) waits, though the first one's context is live.
func TestHandler_siblings_do_not_wait_reruns_do(t *testing.T) {
	t.Parallel()
	var h runningHandlers
	var waited atomic.Int32
	h.waiting = func(int) { waited.Add(1) }
	log := slog.New(slog.DiscardHandler)
	in := func(task, step, params string) HandlerInput {
		return HandlerInput{TaskID: task, TaskType: "t", Step: step, Params: json.RawMessage(params)}
	}
	stoppedCtx, stop := context.WithCancel(context.Background())
	leaveStopped, err := h.enter(stoppedCtx, in("8", "", `{}`), "run", "1", log)
	require.NoError(t, err)
	stop() // told to stop, still running
	for i, c := range []struct {
		in       HandlerInput
		activity string
	}{
		{in("9", "each", `{"item":1}`), "2"},
		{in("9", "each", `{"item":1}`), "3"},
		{in("8", "other", `{}`), "4"},
	} {
		leave, err := h.enter(context.Background(), c.in, "run", c.activity, log)
		require.NoError(t, err, "handler %d", i)
		defer leave()
	}
	require.Zero(t, waited.Load(), "no handler waited")

	first, err := h.enter(context.Background(), in("11", "", `{}`), "run", "5", log)
	require.NoError(t, err)
	entered := make(chan func())
	go func() {
		again, err := h.enter(context.Background(), in("11", "", `{}`), "run", "5", log)
		if !assert.NoError(t, err) {
			again = func() {}
		}
		entered <- again
	}()
	require.Eventually(t, func() bool { return waited.Load() == 1 }, time.Minute, time.Millisecond, "the rerun waits")
	select {
	case <-entered:
		t.Fatal("the rerun started beside the first execution")
	default:
	}
	first()
	(<-entered)()
	leaveStopped()
}

// A handler of another run of the same work is waited for though its
// context is live: one run of a task is open at a time, so it is a closed
// run's. A run evicted from the worker's cache leaves its local activity
// running, not cancelled; replayed and cancelled before it started the
// activity again, the run reports the cancel, and the task's next claim
// starts a run whose handler would run beside the first (seen in the e2e
// suite under load: TestE2E_local_handler_does_not_start_beside_its_cancelled_one).
func TestHandler_waits_for_another_runs_handler_whose_context_is_live(t *testing.T) {
	t.Parallel()
	var h runningHandlers
	waiting := make(chan int, 1)
	h.waiting = func(n int) { waiting <- n }
	log := slog.New(slog.DiscardHandler)
	in := HandlerInput{TaskID: "12", TaskType: "t", Params: json.RawMessage(`{}`)}
	orphan, err := h.enter(context.Background(), in, "evicted-run", "3", log) // never cancelled
	require.NoError(t, err)

	entered := make(chan func(), 1)
	go func() {
		leave, err := h.enter(context.Background(), in, "next-run", "1", log)
		if !assert.NoError(t, err) {
			leave = func() {}
		}
		entered <- leave
	}()
	select {
	case n := <-waiting:
		require.Equal(t, 1, n)
	case leave := <-entered:
		leave()
		t.Fatal("the next run's handler started beside the evicted run's")
	}
	orphan()
	(<-entered)()
}

// A handler that waits for a stopped one and is itself stopped first
// returns an error that says why it did not start.
func TestHandler_waiting_for_a_stopped_one_ends_with_its_context(t *testing.T) {
	t.Parallel()
	h := newStubborn()
	defer close(h.release)
	a := &Activities{}
	waiting := make(chan int, 1)
	a.handlers.waiting = func(n int) { waiting <- n }
	in := HandlerInput{TaskID: "10", TaskType: "t.stubborn", Params: json.RawMessage(`{}`)}
	stopStubborn(t, a, h, in)
	ctx, cancel := context.WithCancel(context.Background())
	leave, err := func() (func(), error) {
		go func() { <-waiting; cancel() }()
		// The same run as the stopped one (the testsuite's), another
		// activity: it waits because the first one's context ended.
		return a.handlers.enter(ctx, in, "default-test-run-id", "second", a.logger())
	}()
	require.Nil(t, leave)
	require.ErrorContains(t, err, "a handler of task 10 that was told to stop (a cancelled or timed-out run), or of another run, or an earlier execution of this activity, still runs in this process")
	require.ErrorIs(t, err, context.Canceled)
}

// CancelHandlers cancels a handler that starts after it too: a stop whose
// grace ended leaves no handler with a live context.
func TestCancelHandlers_cancels_later_handlers_too(t *testing.T) {
	t.Parallel()
	reg := NewRegistry()
	reg.MustAdd("test.wait", HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	a := &Activities{Registry: reg}
	a.CancelHandlers()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	a.RegisterOn(env)
	_, err := env.ExecuteActivity("test.wait", HandlerInput{TaskID: "1", TaskType: "test.wait", Attempt: 1, WorkerID: "w1", Params: json.RawMessage(`{}`)})
	require.ErrorContains(t, err, context.Canceled.Error())
}

// CancelHandlers leaves local handlers to the SDK: cancelled by it, a
// local handler's retries would fail at once and spend its attempts.
func TestCancelHandlers_leaves_local_handlers_alone(t *testing.T) {
	t.Parallel()
	h := HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		select {
		case <-ctx.Done(): // a cancel comes at once: CancelHandlers was called before
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
			return json.RawMessage(`{"live":true}`), nil
		}
	})
	a := &Activities{Registry: NewRegistry()}
	a.CancelHandlers()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.SetTestTimeout(time.Minute) // a local activity's deadline: not the testsuite's 3 s, which a loaded machine passes
	v, err := env.ExecuteLocalActivity(a.handlerActivity("test.live", h), HandlerInput{TaskID: "1", TaskType: "test.live", Attempt: 1, WorkerID: "w1", Params: json.RawMessage(`{}`)})
	require.NoError(t, err)
	var out map[string]bool
	require.NoError(t, v.Get(&out))
	require.True(t, out["live"])
}
