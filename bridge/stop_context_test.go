package bridge

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A Stop whose ctx ends while a claim call is still under way (b.loops
// not done: up to claimStopGrace) cancels no handler before the worker's
// stop begins: the worker still polls, and a handler attempt it starts
// meanwhile must not fail at once (spending one of the type's retries).
// (Found by a review of the first fix.)
func TestStop_context_end_cancels_no_handler_before_the_worker_stops(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.ShutdownGrace = time.Hour })
	reg := activities.NewRegistry()
	reg.MustAdd("test.quick", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
			return json.RawMessage(`{"ok":true}`), nil
		}
	}))
	bb.b.acts = &activities.Activities{Registry: reg, TaskManager: bb.api}
	var workerStopped atomic.Bool
	release := make(chan struct{})
	bb.b.worker = stoppingWorker{stop: func() { workerStopped.Store(true) }}
	bb.b.loops.Add(1) // a claim call still under way (claimStopGrace)
	go func() { <-release; bb.b.loops.Done() }()
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // e.g. an embedder's short stop deadline
	require.Error(t, bb.b.Stop(ctx))
	require.False(t, workerStopped.Load(), "the worker still runs and polls")

	// A handler attempt the still-polling worker starts now.
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	bb.b.acts.RegisterOn(env)
	_, err := env.ExecuteActivity("test.quick", activities.HandlerInput{TaskID: "1", TaskType: "test.quick", Attempt: 1, WorkerID: "w1", Params: json.RawMessage(`{}`)})
	require.NoError(t, err, "a handler started before the worker stops polling must not fail at once")
}
