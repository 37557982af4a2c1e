package workflows_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// A multi-step run reads its task before a step starts when its claim may
// be over (stepsGuardClaim), and starts no step once it is. The test
// environment's history length stays where a test sets it: a handler that
// sets it makes the next steps start in a later workflow task, as they do
// on a server.

// claimOverSetup is setup with test.first (which runs then) and test.next
// (which counts its runs), and the type remote.job for enqueue steps.
func claimOverSetup(t *testing.T, then func(b *testBundle)) (*testBundle, *atomic.Int32) {
	var next atomic.Int32
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.first", func(context.Context, struct{}) (map[string]int, error) {
			then(b)
			return map[string]int{"ok": 1}, nil
		})
		activities.Register(reg, "test.next", func(context.Context, struct{}) (map[string]int, error) {
			next.Add(1)
			return map[string]int{"ok": 2}, nil
		})
	})
	registerType(t, b, "remote.job")
	return b, &next
}

// twoSteps are test.first, then test.next.
func twoSteps() []workflows.Step {
	return []workflows.Step{{Name: "one", Handler: "test.first", Params: map[string]any{}}, {Name: "two", Handler: "test.next", Params: map[string]any{}}}
}

// localTwoSteps claims a task of twoSteps run as local activities, with a
// young claim: only a local step past the first workflow task reads.
func localTwoSteps(t *testing.T) (*testBundle, *atomic.Int32, workflows.TaskInput) {
	b, next := claimOverSetup(t, func(*testBundle) {})
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: twoSteps(), ActivityOptions: workflows.ActivityOptions{Local: workflows.Bool(true)}}.WithDefaults())
	in.Claim.ClaimedAt = b.env.Now()
	return b, next, in
}

// children counts the tasks of type remote.job: enqueue steps' children.
func children(b *testBundle) int {
	n := 0
	for _, task := range b.tm.Tasks() {
		if task.Type == "remote.job" {
			n++
		}
	}
	return n
}

// While the first step runs, the claim (of unknown age) times out and
// another worker claims the task, without a signal to the run: the steps
// after it (a handler, a for_each, an enqueue) do not start, and the run
// reports nothing; the task stays with the other worker. Before, each
// started, the enqueue step created its child, and the run learnt of the
// claim's end only at its report. (Found by a review.)
func TestSteps_no_step_starts_once_the_claim_is_over(t *testing.T) {
	t.Parallel()
	for name, step := range map[string]workflows.Step{
		"handler":  {Name: "two", Handler: "test.next", Params: map[string]any{}},
		"for_each": {Name: "each", Handler: "test.next", ForEach: "params.list", Params: map[string]any{}},
		"enqueue":  {Name: "remote", Enqueue: &workflows.Enqueue{Type: "remote.job", Params: map[string]any{"n": 1}}},
		"parallel": {Name: "group", Parallel: []workflows.Step{
			{Name: "p1", Handler: "test.next", Params: map[string]any{}},
			{Name: "p2", Enqueue: &workflows.Enqueue{Type: "remote.job", Params: map[string]any{"n": 2}}},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b, next := claimOverSetup(t, func(b *testBundle) {
				b.reclaim(t, "demo.pipeline")
				b.env.SetCurrentHistoryLength(10) // the next workflow task
			})
			steps := []workflows.Step{{Name: "one", Handler: "test.first", Params: map[string]any{}}, step}
			in := b.claim(t, "demo.pipeline", map[string]any{"list": []int{1, 2}}, workflows.TypeOptions{Steps: steps})
			_, err := b.run(in)
			requireErrorType(t, err, activities.ErrTypeClaimLost)
			require.ErrorContains(t, err, "over before a step started")
			require.Zero(t, next.Load(), "a handler ran for a claim that was over")
			require.Zero(t, children(b), "a child task was created for a claim that was over")
			require.Empty(t, b.tm.Completions(in.Task.ID), "nothing is reported")
			st := b.task(t, in.Task.ID)
			require.Equal(t, "claimed", st.Status)
			require.Equal(t, "w2", st.ClaimedBy)
		})
	}
}

// A claim of unknown age that holds: the read finds it, and every step
// runs, the child is created, the outcome reported.
func TestSteps_claim_that_holds_runs_every_step(t *testing.T) {
	t.Parallel()
	b, next := claimOverSetup(t, func(b *testBundle) { b.env.SetCurrentHistoryLength(10) })
	steps := []workflows.Step{
		{Name: "one", Handler: "test.first", Params: map[string]any{}},
		{Name: "two", Handler: "test.next", Params: map[string]any{}},
		{Name: "remote", Enqueue: &workflows.Enqueue{Type: "remote.job", Params: map[string]any{"n": 1}, Timeout: time.Second}, OnFailure: []workflows.Step{{Name: "fallback", Handler: "test.next", Params: map[string]any{}}}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	require.NoError(t, err)
	require.EqualValues(t, 2, next.Load(), "step two, and the fallback of the enqueue step that timed out")
	require.Equal(t, 1, children(b))
	require.Len(t, b.tm.Completions(in.Task.ID), 1)
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
}

// A local multi-step run whose steps start past its first workflow task
// (a bridge took over the run of one that died after its first workflow
// task ran the steps and reported, before it completed) reads the task
// first, even with a young claim: the outcome is recorded, so no step
// runs again and nothing is posted again. Before, every local step ran
// again for a completed task (the outcome still landed once: the report
// read first). (Found by a review.)
func TestSteps_local_steps_run_again_past_the_first_workflow_task_read_first(t *testing.T) {
	t.Parallel()
	b, next, in := localTwoSteps(t)
	_, err := b.api.Complete(context.Background(), taskmanager.ID(in.Task.ID), taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{"one":{"ok":1},"two":{"ok":2}}`)})
	require.NoError(t, err)
	b.env.SetCurrentHistoryLength(5) // the first workflow task timed out
	_, err = b.run(in)
	requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.Zero(t, next.Load())
	require.Len(t, b.tm.Completions(in.Task.ID), 1, "the earlier post only")
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
}

// The same past the first workflow task with the claim holding (a first
// workflow task that failed before any report): the steps run, once.
func TestSteps_local_steps_past_the_first_workflow_task_claim_holds(t *testing.T) {
	t.Parallel()
	b, next, in := localTwoSteps(t)
	b.env.SetCurrentHistoryLength(5)
	_, err := b.run(in)
	require.NoError(t, err)
	require.EqualValues(t, 1, next.Load())
	require.Len(t, b.tm.Completions(in.Task.ID), 1)
}

// The bridge's own renewal (once the claim timed out, this bridge claims
// the task again and signals the new claim to the open run), read before
// its signal came: the run waits for it, up to claim_wait, as the report
// does, and its steps go on with it. Before, the run ended ClaimLost at
// once, and on a server the renewal started a new run that ran every step
// again (an enqueue step would create a second task). (Found by a
// review.)
func TestSteps_own_renewal_read_before_its_signal_goes_on(t *testing.T) {
	t.Parallel()
	b, next := claimOverSetup(t, func(b *testBundle) {
		// the claim times out; this bridge renews it
		_, err := b.claimAfterTimeout("demo.pipeline", "w1")
		require.NoError(t, err)
		b.env.SetCurrentHistoryLength(10)
	})
	steps := twoSteps()
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps})
	// The renewal's signal comes a second later.
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 2, ClaimedAt: b.env.Now()})
	}, time.Second)
	res, err := b.run(in)
	require.NoError(t, err, "the run's own renewal holds the task: the run should go on with it")
	require.EqualValues(t, 1, next.Load())
	require.Equal(t, 2, b.task(t, in.Task.ID).Attempts)
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
	_ = res
}

// A step not started because the claim is over gets no on_failure steps
// (as a full history does not). Before, a wait_for fallback waited its
// whole timeout in a run whose claim was over. (Found by a review.)
func TestSteps_claim_over_runs_no_fallback(t *testing.T) {
	t.Parallel()
	b, next := claimOverSetup(t, func(b *testBundle) {
		b.reclaim(t, "demo.pipeline")
		b.env.SetCurrentHistoryLength(10)
	})
	steps := []workflows.Step{
		{Name: "one", Handler: "test.first", Params: map[string]any{}},
		{Name: "two", Handler: "test.next", Params: map[string]any{}, OnFailure: []workflows.Step{
			{Name: "approve", WaitFor: &workflows.WaitFor{Signal: "approve", Timeout: 24 * time.Hour}},
		}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps})
	start := b.env.Now()
	_, err := b.run(in)
	requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.Zero(t, next.Load())
	require.Less(t, b.env.Now().Sub(start), time.Hour, "the run waited in a fallback step after its claim was over")
}

// The renewal's signal reaches the run one second after the guard's read
// found the task past the claim: the run goes on with it then. Before,
// the run's main coroutine (claims.waitSteps, on the signal channel first)
// took the signal, and the step's wait slept its whole claim_wait. (Found
// by a review; the test environment's time is the workflow's.)
func TestSteps_renewal_signal_taken_by_the_main_coroutine_ends_the_wait(t *testing.T) {
	t.Parallel()
	b, next := claimOverSetup(t, func(b *testBundle) {
		_, err := b.claimAfterTimeout("demo.pipeline", "w1")
		require.NoError(t, err)
		b.env.SetCurrentHistoryLength(10)
	})
	steps := twoSteps()
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps, ClaimWait: 24 * time.Hour})
	var signalled time.Time
	b.env.RegisterDelayedCallback(func() {
		signalled = b.env.Now()
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 2, ClaimedAt: b.env.Now()})
	}, time.Second)
	_, err := b.run(in)
	require.NoError(t, err)
	require.EqualValues(t, 1, next.Load())
	require.Less(t, b.env.Now().Sub(signalled), time.Hour,
		"the run idled its whole claim_wait (24h) after the renewal's signal had reached it")
}

// A claim of known age, 285 s old, read and holding before step one. 20 s
// later (the claim has expired in TaskManager) another worker claims the
// task; step two starts in a later workflow task: past a tenth before the
// claim's timeout, every workflow task reads, and no handler runs for
// w2's claim. Before, a read was good for a tenth of the claim timeout
// whatever the claim's age. (Found by a review.)
func TestSteps_claim_near_its_timeout_is_read_at_every_workflow_task(t *testing.T) {
	t.Parallel()
	b, next := claimOverSetup(t, func(*testBundle) {})
	steps := []workflows.Step{
		{Name: "one", Handler: "test.first", Params: map[string]any{}},
		{Name: "wait", WaitFor: &workflows.WaitFor{Signal: "go", Timeout: time.Hour}},
		{Name: "two", Handler: "test.next", Params: map[string]any{}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps})
	in.Claim.ClaimedAt = b.env.Now().Add(-285 * time.Second)
	b.env.SetCurrentHistoryLength(5)
	b.env.RegisterDelayedCallback(func() {
		b.reclaim(t, "demo.pipeline") // the claim expired (300 s); w2 claims
		b.env.SetCurrentHistoryLength(20)
		b.env.SignalWorkflow("go", map[string]any{})
	}, 20*time.Second)
	_, err := b.run(in)
	require.Error(t, err)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "w2", st.ClaimedBy)
	require.Zero(t, next.Load(), "step two's handler ran 305 s into a 300 s claim, with the task claimed by w2")
}

// A claim of unknown age (ClaimedAt zero: found again by a sweep) read
// holding before step one; 20 s later the claim times out in TaskManager
// and w2 claims the task, and step two starts in a later workflow task:
// such a claim is read at every workflow task, and no handler runs for
// w2's claim. Before, a read was trusted for a tenth of the claim
// timeout. (Found by a review.)
func TestSteps_claim_of_unknown_age_is_read_at_every_workflow_task(t *testing.T) {
	t.Parallel()
	b, next := claimOverSetup(t, func(*testBundle) {})
	steps := []workflows.Step{
		{Name: "one", Handler: "test.first", Params: map[string]any{}},
		{Name: "wait", WaitFor: &workflows.WaitFor{Signal: "go", Timeout: time.Hour}},
		{Name: "two", Handler: "test.next", Params: map[string]any{}},
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps})
	require.True(t, in.Claim.ClaimedAt.IsZero())
	b.env.SetCurrentHistoryLength(5)
	b.env.RegisterDelayedCallback(func() {
		b.reclaim(t, "demo.pipeline") // the claim expired; w2 claims
		b.env.SetCurrentHistoryLength(20)
		b.env.SignalWorkflow("go", map[string]any{})
	}, 20*time.Second)
	_, err := b.run(in)
	require.Equal(t, "w2", b.task(t, in.Task.ID).ClaimedBy)
	require.Zero(t, next.Load(), "step two's handler ran with the task claimed by w2 (err %v)", err)
}

// The run is cancelled while a step's read waits (claim_wait) for the
// signal of the claim that took the task, and none comes: the run ends
// ClaimLost, unreported, without running step two.
func TestSteps_cancel_while_waiting_for_a_moved_claim_reports_nothing(t *testing.T) {
	t.Parallel()
	b, next := claimOverSetup(t, func(b *testBundle) {
		b.reclaim(t, "demo.pipeline")
		b.env.SetCurrentHistoryLength(10)
	})
	steps := twoSteps()
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps, ClaimWait: 24 * time.Hour})
	b.env.RegisterDelayedCallback(b.env.CancelWorkflow, time.Minute)
	_, err := b.run(in)
	requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.Zero(t, next.Load())
	require.Empty(t, b.tm.Completions(in.Task.ID))
}

// Two renewals (attempts 2 and 3) signalled while a step's read runs, the
// run's main coroutine and the read both waiting on the claim channel:
// neither is lost, and the run goes on with attempt 3. (Written by a
// review.)
func TestSteps_two_renewals_signalled_while_a_step_reads(t *testing.T) {
	t.Parallel()
	var next atomic.Int32
	var armed atomic.Bool
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.first", func(context.Context, struct{}) (map[string]int, error) {
			for range 2 {
				_, err := b.claimAfterTimeout("demo.pipeline", "w1")
				require.NoError(t, err)
			}
			b.env.SetCurrentHistoryLength(10)
			armed.Store(true)
			return map[string]int{"ok": 1}, nil
		})
		activities.Register(reg, "test.next", func(context.Context, struct{}) (map[string]int, error) {
			next.Add(1)
			return map[string]int{"ok": 2}, nil
		})
	}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/tasks/") && armed.CompareAndSwap(true, false) {
				b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 2, ClaimedAt: b.env.Now()})
				b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 3, ClaimedAt: b.env.Now()})
			}
			h.ServeHTTP(w, r)
		})
	})
	steps := twoSteps()
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps})
	res, err := b.run(in)
	require.NoError(t, err)
	require.EqualValues(t, 1, next.Load())
	require.Equal(t, "w1", res.WorkerID)
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
}

// A step's read is made before its room in the history is weighed, so
// that the read's own events and bytes count: a for_each item waits for
// the running item's result, as it does without the read. Before, the
// loop found room, the read took it, and the item was refused with
// HistoryFull while another item ran: the task failed. (Found by a
// review. Were item 1 to end before the read, the test would pass
// without showing anything: it cannot fail for a slow machine.)
func TestSteps_read_before_a_step_counts_in_its_room(t *testing.T) {
	t.Parallel()
	const mrb = activities.MaxResultBytes
	s1 := workflows.HistoryGuardBytes - 3*mrb/2 // no room with 2 running, room with 1
	s0 := s1 - 2*mrb - workflows.MaxStepParamsBytes - 1024
	require.Greater(t, s0, 0)
	var armed atomic.Bool
	release := make(chan struct{})
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.item", func(ctx context.Context, p struct {
			I int `json:"i"`
		}) (map[string]int, error) {
			switch p.I {
			case 0:
				b.env.SetCurrentHistoryLength(20) // item 1 still runs; the next launch is in a later workflow task
				b.env.SetCurrentHistorySize(s0)
				armed.Store(true)
			case 1:
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return map[string]int{"i": p.I}, nil
		})
	}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/tasks/") && armed.CompareAndSwap(true, false) {
				// The read's own events and bytes, as a server counts them.
				b.env.SetCurrentHistoryLength(26)
				b.env.SetCurrentHistorySize(s1)
				time.AfterFunc(2*time.Second, func() { close(release) })
			}
			h.ServeHTTP(w, r)
		})
	})
	steps := []workflows.Step{{Name: "each", Handler: "test.item", ForEach: "params.list", MaxParallel: 2, Params: map[string]any{"i": "{{ .index }}"}}}
	in := b.claim(t, "demo.pipeline", map[string]any{"list": []int{0, 1, 2}}, workflows.TypeOptions{Steps: steps})
	b.env.SetCurrentHistoryLength(5)
	res, err := b.run(in)
	require.NoError(t, err, "item 2 should wait for item 1's result, as it does without the read")
	require.True(t, res.Success)
}

// A for_each launcher that finds the claim over cancels the items
// running, as an item's failure does. Before, once the read moved into
// the launcher, they ran to their end for a claim that was over. (Found
// by a review.)
func TestSteps_for_each_refused_for_a_claim_over_cancels_its_running_items(t *testing.T) {
	t.Parallel()
	var taskID atomic.Value
	stop := make(chan struct{})
	var once sync.Once
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.item", func(ctx context.Context, p struct {
			I int `json:"i"`
		}) (map[string]int, error) {
			switch p.I {
			case 0:
				// The task ended elsewhere (same attempt, not claimed): over, not past.
				_, err := b.api.Complete(context.Background(), taskmanager.ID(taskID.Load().(string)), taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{}`)})
				require.NoError(t, err)
				b.env.SetCurrentHistoryLength(20)
			case 1:
				select {
				case <-time.After(50 * time.Second): // a long handler
				case <-stop: // cancelled (the test environment cancels no activity context)
				}
			}
			return map[string]int{"i": p.I}, nil
		})
	})
	var mu sync.Mutex
	var cancelled []string
	b.env.SetOnActivityCanceledListener(func(info *activity.Info) {
		mu.Lock()
		defer mu.Unlock()
		cancelled = append(cancelled, info.ActivityType.Name)
		once.Do(func() { close(stop) })
	})
	steps := []workflows.Step{{Name: "each", Handler: "test.item", ForEach: "params.list", MaxParallel: 2, Params: map[string]any{"i": "{{ .index }}"}}}
	in := b.claim(t, "demo.pipeline", map[string]any{"list": []int{0, 1, 2}}, workflows.TypeOptions{Steps: steps})
	taskID.Store(in.Task.ID)
	b.env.SetCurrentHistoryLength(5)
	_, err := b.run(in)
	requireErrorType(t, err, activities.ErrTypeClaimLost)
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, cancelled, "item 1 ran on to its end for a claim that was over: the for_each refusal does not cancel ictx")
}

// A parallel group's step that waited for room reads before the room is
// weighed again, so it waits on for its sibling's result; and the same
// for a for_each in a group whose launcher, with none of its items
// running, waited for its siblings' results. Before, the read in execute
// took the room after it was weighed, and the step failed HistoryFull
// while a sibling ran. (Found by a review; a machine too slow to read
// before the sibling ends makes it pass without showing anything, never
// fail.)
func TestSteps_step_that_waited_for_room_reads_before_weighing_it(t *testing.T) {
	t.Parallel()
	const mrb = activities.MaxResultBytes
	s1 := workflows.HistoryGuardBytes - 3*mrb/2 // after the read: room with none running, not with 1
	for name, tc := range map[string]struct {
		last   workflows.Step
		params map[string]any
		sInit  int // room with 1 sibling running, not with 2
	}{
		"parallel step":     {workflows.Step{Name: "b", Handler: "test.b", Params: map[string]any{}}, map[string]any{"n": 1}, workflows.HistoryGuardBytes - 5*mrb/2},
		"for_each in group": {workflows.Step{Name: "each", Handler: "test.b", ForEach: "params.list", Params: map[string]any{}}, map[string]any{"list": []int{0}}, workflows.HistoryGuardBytes - workflows.MaxStepParamsBytes - 5*mrb/2},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var armed atomic.Bool
			var ran atomic.Int32
			release := make(chan struct{})
			var b *testBundle
			b = setup(t, func(reg *activities.Registry) {
				activities.Register(reg, "test.a", func(context.Context, struct{}) (map[string]int, error) {
					b.env.SetCurrentHistoryLength(20) // c still runs; the last step starts in a later workflow task
					armed.Store(true)
					return map[string]int{"a": 1}, nil
				})
				activities.Register(reg, "test.c", func(ctx context.Context, _ struct{}) (map[string]int, error) {
					select {
					case <-release:
					case <-time.After(30 * time.Second):
					}
					return map[string]int{"c": 1}, nil
				})
				activities.Register(reg, "test.b", func(context.Context, struct{}) (map[string]int, error) {
					ran.Add(1)
					return map[string]int{"b": 1}, nil
				})
			}, func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/tasks/") && armed.CompareAndSwap(true, false) {
						// The read's own events and bytes, as a server counts them.
						b.env.SetCurrentHistoryLength(26)
						b.env.SetCurrentHistorySize(s1)
						time.AfterFunc(2*time.Second, func() { close(release) })
					}
					h.ServeHTTP(w, r)
				})
			})
			steps := []workflows.Step{{Name: "group", Parallel: []workflows.Step{
				{Name: "a", Handler: "test.a", Params: map[string]any{}},
				{Name: "c", Handler: "test.c", Params: map[string]any{}},
				tc.last,
			}}}
			in := b.claim(t, "demo.pipeline", tc.params, workflows.TypeOptions{Steps: steps})
			b.env.SetCurrentHistoryLength(5)
			b.env.SetCurrentHistorySize(tc.sInit)
			res, err := b.run(in)
			require.NoError(t, err, "the last step should wait for c's result after its read")
			require.True(t, res.Success, "%+v", res)
			require.EqualValues(t, 1, ran.Load())
		})
	}
}

// A multi-step task whose step failed for good is reported failed;
// TaskManager re-queues it, a bridge claims it again at once, and its
// signal reaches the run before it closes: the run continues as new for
// that claim, with its steps, as a task of one handler does.
func TestSteps_claim_after_a_requeued_failure_continues_as_new(t *testing.T) {
	t.Parallel()
	var b *testBundle
	reclaimed := make(chan workflows.Claim, 1)
	reclaim := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			if strings.HasSuffix(r.URL.Path, "/complete") {
				task, err := b.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: b.types["demo.pipeline"]})
				if err == nil {
					c := workflows.Claim{WorkerID: "w1", Attempts: int(task.Attempts)}
					reclaimed <- c
					b.env.SignalWorkflow(workflows.ClaimSignalName, c)
				}
			}
		})
	}
	b = setup(t, nil, reclaim)
	steps := []workflows.Step{{Name: "one", Handler: "example.error", Params: map[string]any{"message": "step one fails"}}, {Name: "two", Handler: "example.echo", Params: map[string]any{}}}
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: steps})
	_, err := b.run(in)
	var can *workflow.ContinueAsNewError
	require.ErrorAs(t, err, &can, "want the run to continue as new for the new claim")
	var next workflows.TaskInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.Equal(t, <-reclaimed, next.Claim)
	require.Len(t, next.Options.Steps, 2, "the new run has the task's steps")
	require.Len(t, b.tm.Completions(in.Task.ID), 1, "the failure, once")
	st := b.task(t, in.Task.ID)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, 2, st.Attempts)
}
