package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// stoppingWorker is a Temporal worker whose Stop runs stop: the SDK's
// stops local and then regular activities, each given WorkerStopTimeout.
type stoppingWorker struct {
	worker.Worker
	stop func()
}

func (w stoppingWorker) Stop() { w.stop() }

// runBlockingHandler runs, on bb's activities, a handler that returns
// only once cancelled; it returns when the handler started, with the
// channel that gets its attempt's error.
func runBlockingHandler(bb *bridgeBundle) <-chan error {
	reg := activities.NewRegistry()
	started := make(chan struct{})
	reg.MustAdd("test.block", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	bb.b.acts = &activities.Activities{Registry: reg, TaskManager: bb.api}
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	bb.b.acts.RegisterOn(env)
	returned := make(chan error, 1)
	go func() {
		_, err := env.ExecuteActivity("test.block", activities.HandlerInput{TaskID: "1", TaskType: "test.block", Attempt: 1, WorkerID: "w1", Params: json.RawMessage(`{}`)})
		returned <- err
	}()
	<-started
	return returned
}

// When the shutdown grace ends, Stop cancels every regular handler still
// running, while the SDK's stop may still wait (for local activities,
// before it even tells regular ones to stop). Before, a regular handler ran
// on until the SDK's last wait ended: two or three times the grace, past
// StopTimeout.
func TestStop_cancels_handlers_when_the_grace_ends(t *testing.T) {
	t.Parallel()
	const grace = 200 * time.Millisecond
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.ShutdownGrace = grace })
	returned := runBlockingHandler(bb)
	handlerErr := make(chan error, 1)
	var cancelled time.Time
	bb.b.worker = stoppingWorker{stop: func() { // the SDK still waits
		select {
		case err := <-returned:
			cancelled = time.Now()
			handlerErr <- err
		case <-time.After(eventually):
			handlerErr <- nil
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*eventually)
	defer cancel()
	stopped := time.Now()
	require.NoError(t, bb.b.Stop(ctx))
	err := <-handlerErr
	require.Error(t, err, "the handler was cancelled while the worker's stop waited")
	require.ErrorContains(t, err, context.Canceled.Error())
	require.GreaterOrEqual(t, cancelled.Sub(stopped), grace, "not before the grace ended")
}

// A Stop whose context ends before the shutdown grace does cancels the
// handlers still running, and returns ctx's error: its caller waits no
// more, and neither do they. Before, they ran on until the grace ended.
func TestStop_cancels_handlers_when_its_context_ends(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.ShutdownGrace = time.Hour })
	returned := runBlockingHandler(bb)
	workerStop := make(chan struct{})
	bb.b.worker = stoppingWorker{stop: func() { <-workerStop }} // the SDK waits out the grace
	defer close(workerStop)
	ctx, cancel := context.WithCancel(context.Background())
	stopErr := make(chan error, 1)
	go func() { stopErr <- bb.b.Stop(ctx) }()
	cancel()
	require.ErrorIs(t, <-stopErr, context.Canceled)
	select {
	case err := <-returned:
		require.ErrorContains(t, err, context.Canceled.Error(), "the handler was cancelled")
	case <-time.After(eventually):
		t.Fatal("the handler still runs after Stop returned")
	}
}

// A claim that fails in a way that may hide a claim after the sweeper
// ended (a claim call let run on while claiming stops) is not held for a
// sweep that will never come: its place is given back. Before, it stayed
// counted in flight.
func TestHoldUntilSweep_after_the_sweeper_ended_gives_the_place_back(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	bb.b.sweeper(ctx) // ends at once
	tk, err := bb.b.adm.reserve(context.Background())
	require.NoError(t, err)
	bb.b.holdUntilSweep(tk, "example.echo")
	require.Zero(t, bb.b.adm.inFlight())
}

// A signal sent twice at once (timeout(1), a kill of the process group) is
// one stop: its handlers keep their grace. A signal sameStop or more after
// the first exits at once. The clock is the test's: each signal read after
// the first asks it for the time.
func TestWatchSignals_signal_sent_twice_at_once_is_one_stop(t *testing.T) {
	t0 := time.Unix(1000, 0)
	times := make(chan time.Time)
	sigs := make(chan os.Signal, 3)
	sigs <- syscall.SIGTERM
	sigs <- syscall.SIGTERM // the same stop, already waiting
	stopped, exited := make(chan os.Signal, 1), make(chan struct{})
	go watchSignals(sigs, func() time.Time { return <-times }, func(s os.Signal) { stopped <- s }, func() { close(exited) })
	// tell answers the clock, false if watchSignals exited instead.
	tell := func(at time.Time) bool {
		select {
		case times <- at:
			return true
		case <-exited:
			return false
		}
	}
	require.True(t, tell(t0))
	require.Equal(t, syscall.SIGTERM, <-stopped)

	sigs <- syscall.SIGINT // a moment later: the same stop
	require.True(t, tell(t0.Add(sameStop-time.Millisecond)), "a signal sent twice at once exited")
	sigs <- syscall.SIGINT // a second signal
	require.True(t, tell(t0.Add(sameStop)), "a signal within sameStop of the first exited")
	<-exited
}

// An embedder's Stop while Run runs, Run's context still live, makes Run
// return: the claim loops it ended are not taken for --max-runs' end, whose
// wait for the open runs would never end (Stop stopped their worker).
//
// So does a Stop while Run, its --max-runs budget spent, waits for the
// tasks it claimed (found by a review of the first fix).
func TestStop_while_Run_runs_makes_it_return(t *testing.T) {
	for _, maxRuns := range []int{0, 1} {
		t.Run(fmt.Sprintf("max_runs=%d", maxRuns), func(t *testing.T) {
			bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxRuns = maxRuns })
			bb.only("example.echo")
			bb.b.worker = stoppingWorker{stop: func() {}}
			bb.b.acts = &activities.Activities{Registry: activities.NewRegistry(), TaskManager: bb.api}
			bb.create(t, "example.echo", map[string]any{"message": "runs long"})
			runCtx, cancelRun := context.WithCancel(context.Background())
			defer cancelRun()
			done := make(chan error, 1)
			go func() { done <- bb.b.serve(runCtx) }()
			require.Eventually(t, func() bool { return bb.b.adm.openRuns() == 1 }, eventually, 10*time.Millisecond)
			if maxRuns > 0 {
				bb.b.claimLoops.Wait() // the budget is spent
				// Most likely in its wait by then; if not, Run sees Stop
				// before it waits: the test passes either way.
				time.Sleep(200 * time.Millisecond)
			}
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			require.NoError(t, bb.b.Stop(sctx))
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(time.Minute): // a guard against the hang, not a timing assertion
				t.Fatalf("Run has not returned a minute after Stop (in flight: %d)", bb.b.adm.inFlight())
			}
		})
	}
}
