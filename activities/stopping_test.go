package activities

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

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
	return env
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

	root1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := stoppingEnv(root1).ExecuteLocalActivity(a.handlerActivity("t.stubborn", h), in)
		first <- err
	}()
	<-h.started
	cancel1() // the run is cancelled: the local activity ends, its handler does not
	require.True(t, temporal.IsCanceledError(<-first), "the SDK settles a cancelled local activity at once")

	in.Attempt = 2 // the next claim's run
	second := make(chan error, 1)
	go func() {
		_, err := stoppingEnv(context.Background()).ExecuteLocalActivity(a.handlerActivity("t.stubborn", h), in)
		second <- err
	}()
	select {
	case n := <-waiting:
		require.Equal(t, 1, n)
	case <-h.started:
		t.Fatal("the next claim's handler started beside the stopped one")
	}
	close(h.release) // the first handler returns at last
	<-h.started
	require.NoError(t, <-second)
	require.Empty(t, a.handlers.m, "every handler left")
}

// Handlers of one task whose contexts are live are siblings (a for_each
// step's items, two steps of a parallel group): they run at once, as do
// those of other tasks beside a stopped one.
func TestHandler_siblings_and_other_tasks_do_not_wait(t *testing.T) {
	t.Parallel()
	h := newStubborn()
	a := &Activities{}
	var once sync.Once
	release := func() { once.Do(func() { close(h.release) }) }
	a.handlers.waiting = func(int) { t.Error("a handler waited"); release() }
	root, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() {
		_, err := stoppingEnv(root).ExecuteLocalActivity(a.handlerActivity("t.stubborn", h), HandlerInput{TaskID: "8", TaskType: "t.stubborn", Params: json.RawMessage(`{}`)})
		stopped <- err
	}()
	<-h.started
	cancel()
	<-stopped // task 8's handler was told to stop and still runs
	done := make(chan error, 3)
	for _, in := range []HandlerInput{
		{TaskID: "9", TaskType: "t.stubborn", Step: "each", Params: json.RawMessage(`{"item":1}`)},
		{TaskID: "9", TaskType: "t.stubborn", Step: "each", Params: json.RawMessage(`{"item":1}`)},
		{TaskID: "8", TaskType: "t.stubborn", Step: "other", Params: json.RawMessage(`{}`)},
	} {
		go func() {
			_, err := stoppingEnv(context.Background()).ExecuteLocalActivity(a.handlerActivity("t.stubborn", h), in)
			done <- err
		}()
	}
	for range 3 {
		<-h.started // all three run at once, none waits for another
	}
	release()
	for range 3 {
		require.NoError(t, <-done)
	}
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
	root1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := stoppingEnv(root1).ExecuteLocalActivity(a.handlerActivity("t.stubborn", h), in)
		first <- err
	}()
	<-h.started
	cancel1()
	<-first
	ctx, cancel := context.WithCancel(context.Background())
	leave, err := func() (func(), error) {
		go func() { <-waiting; cancel() }()
		return a.handlers.enter(ctx, in, a.logger())
	}()
	require.Nil(t, leave)
	require.ErrorContains(t, err, "a handler of task 10 that was told to stop (a cancelled or timed-out run) still runs in this process")
	require.ErrorIs(t, err, context.Canceled)
}
