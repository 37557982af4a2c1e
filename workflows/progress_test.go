package workflows_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkpb "go.temporal.io/api/sdk/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// activityNames records the name of every activity and local activity a
// run starts.
func activityNames(b *testBundle) func() []string {
	var mu sync.Mutex
	var names []string
	add := func(info *activity.Info) {
		mu.Lock()
		names = append(names, info.ActivityType.Name)
		mu.Unlock()
	}
	b.env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) { add(info) })
	b.env.SetOnLocalActivityStartedListener(func(info *activity.Info, _ context.Context, _ []any) { add(info) })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), names...)
	}
}

// progressPosts returns the progress values and messages TaskManager took
// for a task, in order; every post was accepted.
func progressPosts(t *testing.T, b *testBundle, taskID string) (seen []int, messages []string) {
	t.Helper()
	for _, p := range b.tm.ProgressCalls(taskID) {
		require.True(t, p.Accepted)
		seen = append(seen, p.Progress)
		messages = append(messages, p.Message)
	}
	return seen, messages
}

// A multi-step task's progress reaches TaskManager from the activities the
// run has anyway (the steps' handlers, the report), in order, up to 100,
// and the run starts no progress activity.
func TestProgress_posted_by_handlers_without_progress_activities(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	names := activityNames(b)
	steps := []workflows.Step{
		{Name: "a", Handler: "example.echo", Params: map[string]any{"message": "a"}},
		{Parallel: []workflows.Step{
			{Name: "b", Handler: "example.sleep", Params: map[string]any{"duration": 0.1}},
			{Name: "c", Handler: "example.echo", Params: map[string]any{"message": "c"}},
		}},
		{Name: "d", Handler: "example.echo", Params: map[string]any{"message": "d"}},
		{Parallel: []workflows.Step{
			{Name: "e", Handler: "example.echo", Params: map[string]any{"message": "e"}},
			{Name: "f", Handler: "example.echo", Params: map[string]any{"message": "f"}},
		}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"x": 1}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)

	seen, messages := progressPosts(t, b, in.Task.ID)
	// a ends: 1/6; d starts: 3/6 done, ends: 4/6; the report: 6/6.
	require.Equal(t, []int{16, 50, 66, 100}, seen)
	require.Equal(t, []string{"step a done (1/6)", "step d started (3/6 steps done)", "step d done (4/6)", "6/6 steps done"}, messages)
	require.NotContains(t, names(), activities.ProgressActivityName)
	require.ElementsMatch(t, []string{"example.echo", "example.sleep", "example.echo", "example.echo", "example.echo", "example.echo",
		activities.ReportActivityName}, names())
}

// A parallel group that fails after some of its members were counted
// done, and whose failure a fallback handles, adds only its other members
// to the steps done, and its fallback is not counted. Before, it added all
// of them again and counted the fallback: 100 % was posted while steps
// were still to run.
func TestProgress_failed_group_counts_each_member_once(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	steps := []workflows.Step{
		{Name: "g", Parallel: []workflows.Step{
			{Name: "skipped", Handler: "example.echo", When: "false"},
			{Name: "bad", Handler: "example.error", Params: map[string]any{"message": "no"}},
		}, OnFailure: []workflows.Step{{Name: "fb", Handler: "example.echo", Params: map[string]any{"message": "fallback"}}}},
		{Name: "d", Handler: "example.echo", Params: map[string]any{"message": "d"}},
		{Name: "e", Handler: "example.echo", Params: map[string]any{"message": "e"}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"x": 5}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)
	seen, messages := progressPosts(t, b, in.Task.ID)
	// skipped, then bad (handled by fb, which does not count), then d, e.
	// Posts go in the background: one may replace another still waiting.
	require.Contains(t, messages, "step d done (3/4)")
	require.Equal(t, "step e done (4/4)", messages[len(messages)-1])
	require.True(t, slices.IsSorted(seen) && slices.Index(seen, 100) == len(seen)-1, "progress rises, to 100 only at the end: %v", messages)
}

// While a step runs and another waits, the run's current details (what
// Temporal Web shows) and the progress query say so.
func TestProgress_current_details_and_query_while_steps_run(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.block", func(ctx context.Context, p struct{}) (struct{}, error) {
			<-release
			return struct{}{}, nil
		})
	})
	steps := []workflows.Step{
		{Name: "a", Handler: "example.echo", Params: map[string]any{"message": "a"}},
		{Parallel: []workflows.Step{
			{Name: "blk", Handler: "test.block"},
			{Name: "approve", WaitFor: &workflows.WaitFor{Signal: "go"}},
		}},
		{Name: "d", Handler: "example.echo", Params: map[string]any{"message": "d"}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"x": 2}, workflows.TypeOptions{Steps: steps})

	var got workflows.StepProgress
	var details string
	// Look until step a is done (then blk runs and approve waits), then
	// let the run go on.
	var look func()
	look = func() {
		v, err := b.env.QueryWorkflow(workflows.ProgressQueryName)
		require.NoError(t, err)
		got = workflows.StepProgress{}
		require.NoError(t, v.Get(&got))
		if got.Done < 1 {
			b.env.RegisterDelayedCallback(look, time.Millisecond)
			return
		}
		v, err = b.env.QueryWorkflow("__temporal_workflow_metadata")
		require.NoError(t, err)
		var md sdkpb.WorkflowMetadata
		require.NoError(t, v.Get(&md))
		details = md.GetCurrentDetails()
		close(release)
		b.env.SignalWorkflow("go", map[string]any{"ok": true})
	}
	b.env.RegisterDelayedCallback(look, time.Millisecond)
	_, err := b.run(in)
	require.NoError(t, err)

	require.Equal(t, workflows.StepProgress{
		Percent: 25, Message: "1/4 steps done", Done: 1, Total: 4,
		Running: []string{"step blk · test.block running"},
		Waiting: []string{`step approve waits for signal "go"`},
	}, got)
	require.Equal(t, "1/4 steps done\nstep blk · test.block running\nstep approve waits for signal \"go\"", details)

	v, err := b.env.QueryWorkflow(workflows.ProgressQueryName)
	require.NoError(t, err)
	var end workflows.StepProgress
	require.NoError(t, v.Get(&end))
	require.Equal(t, workflows.StepProgress{Percent: 100, Message: "4/4 steps done", Done: 4, Total: 4}, end)
}

// A step routed to another task queue (a worker in another SDK, which may
// not post progress) is handed none: the next handler here posts what it
// would have, so no value is lost.
func TestProgress_routed_step_is_handed_none(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var mu sync.Mutex
	handed := map[string][2]*activities.Progress{}
	b.env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, args converter.EncodedValues) {
		var in activities.HandlerInput
		if info.ActivityType.Name != "example.echo" || args.Get(&in) != nil {
			return
		}
		mu.Lock()
		handed[in.Step] = [2]*activities.Progress{in.Progress, in.ProgressDone}
		mu.Unlock()
	})
	steps := []workflows.Step{
		{Name: "a", Handler: "example.echo", Params: map[string]any{"message": "a"}, ActivityOptions: workflows.ActivityOptions{TaskQueue: "other-sdk"}},
		{Name: "b", Handler: "example.echo", Params: map[string]any{"message": "b"}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"x": 2}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)

	require.Equal(t, [2]*activities.Progress{nil, nil}, handed["a"], "the routed step is handed no progress")
	require.Equal(t, 50, handed["b"][0].Percent, "b posts what a would have, as it starts")
	var seen []int
	for _, p := range b.tm.ProgressCalls(in.Task.ID) {
		seen = append(seen, p.Progress)
	}
	require.Equal(t, []int{50, 100}, seen)
}

// A TaskManager that does not answer progress posts costs a step's
// handler no time against its timeout: each step succeeds on its first
// attempt (posting inside the attempt, each would time out and run again).
func TestProgress_hanging_TaskManager_costs_the_handlers_nothing(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	var mu sync.Mutex
	attempts := map[string]int{}
	b.env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, args converter.EncodedValues) {
		var in activities.HandlerInput
		if info.ActivityType.Name == "example.echo" && args.Get(&in) == nil {
			mu.Lock()
			attempts[in.Step]++
			mu.Unlock()
		}
	})
	b.tm.InjectFault(devserver.Fault{Path: "/progress", Latency: time.Minute})
	quick := workflows.ActivityOptions{StartToCloseTimeout: 3 * time.Second}
	steps := []workflows.Step{
		{Name: "a", Handler: "example.echo", Params: map[string]any{"message": "a"}, ActivityOptions: quick},
		{Name: "b", Handler: "example.echo", Params: map[string]any{"message": "b"}, ActivityOptions: quick},
		{Name: "c", Handler: "example.echo", Params: map[string]any{"message": "c"}, ActivityOptions: quick},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"x": 3}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
	require.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1}, attempts, "no handler attempt timed out")
}
