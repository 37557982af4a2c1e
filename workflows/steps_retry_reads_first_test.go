package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/workflows"
)

// A step's handler on the bridge's own worker reads the task before an
// attempt Temporal retries, as a task of one handler does
// (stepsReadOnRetry): once the claim is over, no handler runs again and
// no step starts after it.

// stepRetryBundle is setup with test.flaky, whose first attempts fail,
// the first of them after then ran (which may end the claim); retried
// counts its retried attempts that ran. test.after counts its runs; test.ok
// succeeds; test.until-flaky-ran succeeds once test.flaky's retried
// attempt ran (or fails when cancelled); test.liar and test.liar-with-details fail with an error of
// type ClaimOver of their own, the second with what a read would see.
type stepRetryBundle struct {
	*testBundle
	retried, after atomic.Int32
	ran            chan struct{} // closed when test.flaky's retried attempt ran
}

func stepRetrySetup(t *testing.T, then func(b *testBundle) error) *stepRetryBundle {
	sb := &stepRetryBundle{ran: make(chan struct{})}
	var once, ranOnce sync.Once
	var thenErr atomic.Value
	sb.testBundle = setup(t, func(reg *activities.Registry) {
		reg.MustAdd("test.flaky", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			if activity.GetInfo(ctx).Attempt > 1 {
				sb.retried.Add(1)
				ranOnce.Do(func() { close(sb.ran) })
				return json.RawMessage(`{"ok":true}`), nil
			}
			once.Do(func() {
				if err := then(sb.testBundle); err != nil {
					thenErr.Store(err)
				}
			})
			return nil, errors.New("first attempt fails")
		}))
		reg.MustAdd("test.after", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
			sb.after.Add(1)
			return json.RawMessage(`{}`), nil
		}))
		reg.MustAdd("test.ok", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return json.RawMessage(`{}`), nil
		}))
		reg.MustAdd("test.until-flaky-ran", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			select {
			case <-sb.ran:
				return json.RawMessage(`{}`), nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}))
		reg.MustAdd("test.liar", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return nil, temporal.NewNonRetryableApplicationError("not mine to run", activities.ErrTypeClaimOver, nil)
		}))
		reg.MustAdd("test.liar-with-details", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
			seen := activities.ClaimSeen{Status: "claimed", WorkerID: "py", Attempts: 9}
			return nil, temporal.NewNonRetryableApplicationError("not mine to run", activities.ErrTypeClaimOver, nil, seen)
		}))
	})
	t.Cleanup(func() { require.Nil(t, thenErr.Load(), "then failed") })
	return sb
}

// w2Claims lets the claim time out while a first attempt runs, and has w2,
// a worker that does not signal the run (a Python worker during a
// migration, say), claim the task.
func w2Claims(b *testBundle) error {
	_, err := b.claimAfterTimeout("demo.pipeline", "w2")
	return err
}

func step(name, handler string) workflows.Step {
	return workflows.Step{Name: name, Handler: handler, Params: map[string]any{}}
}

// The claim timed out during a step's first attempt and w2 claimed the
// task: the retry runs no handler, no step starts after it (nor an
// on_failure step), and the run ends ClaimLost, posting nothing. Before,
// the retry ran the handler beside w2's attempt, and the steps after it
// ran too (the README named the gap).
func TestSteps_retried_step_attempt_runs_no_handler_for_a_claim_over(t *testing.T) {
	t.Parallel()
	withFallback := step("one", "test.flaky")
	withFallback.OnFailure = []workflows.Step{step("fallback", "test.after")}
	forEach := step("each", "test.flaky")
	forEach.ForEach = "params.list"
	for name, tc := range map[string]struct {
		steps []workflows.Step
		local bool
	}{
		"handler":        {steps: []workflows.Step{step("one", "test.flaky"), step("two", "test.after")}},
		"handler, local": {steps: []workflows.Step{step("one", "test.flaky"), step("two", "test.after")}, local: true},
		"for_each":       {steps: []workflows.Step{forEach, step("two", "test.after")}},
		"parallel":       {steps: []workflows.Step{{Name: "group", Parallel: []workflows.Step{step("p1", "test.flaky"), step("p2", "test.ok")}}, step("two", "test.after")}},
		"on_failure":     {steps: []workflows.Step{withFallback, step("two", "test.after")}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := stepRetrySetup(t, w2Claims)
			opts := workflows.TypeOptions{Steps: tc.steps}
			if tc.local {
				opts.Local = workflows.Bool(true)
			}
			in := b.claim(t, "demo.pipeline", map[string]any{"list": []int{1, 2, 3}}, opts)
			_, err := b.run(in)
			requireErrorType(t, err, activities.ErrTypeClaimLost)
			require.ErrorContains(t, err, "when a step's handler was to run again")
			require.Zero(t, b.retried.Load(), "a retried attempt ran its handler for a claim that was over")
			require.Zero(t, b.after.Load(), "a step started after the claim was over")
			require.Empty(t, b.tm.Completions(in.Task.ID), "nothing is reported")
			st := b.task(t, in.Task.ID)
			require.Equal(t, "claimed", st.Status)
			require.Equal(t, "w2", st.ClaimedBy, "w2's claim stands")
		})
	}
}

// A retried step attempt whose claim holds (the same worker id: this
// claim, or this bridge's renewal of it) runs its handler, and the steps
// go on.
func TestSteps_retried_step_attempt_runs_while_the_claim_holds(t *testing.T) {
	t.Parallel()
	for _, renewed := range []bool{false, true} {
		b := stepRetrySetup(t, func(b *testBundle) error {
			if !renewed {
				return nil
			}
			_, err := b.claimAfterTimeout("demo.pipeline", "w1")
			return err
		})
		in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: []workflows.Step{step("one", "test.flaky"), step("two", "test.after")}})
		if renewed {
			b.env.RegisterDelayedCallback(func() {
				b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: in.Claim.Attempts + 1})
			}, time.Millisecond)
		}
		_, err := b.run(in)
		require.NoError(t, err, "renewed: %v", renewed)
		require.EqualValues(t, 1, b.retried.Load())
		require.EqualValues(t, 1, b.after.Load())
		require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
	}
}

// The claim timed out and another bridge (w2) claimed the task; its claim
// reached the run by signal, before the retry's read or while the step
// waited for it after a read that showed the task claimed past the run's
// claim. The run serves w2's claim now: the step runs again for it, and
// the steps go on; the steps done before are not run again. (Found by a
// review: the run continued as new for w2's claim, and ran every step
// again from the first.)
func TestSteps_retried_step_attempt_claim_over_with_a_newer_claim_runs_the_step_again(t *testing.T) {
	t.Parallel()
	forEach := step("one", "test.flaky")
	forEach.ForEach = "params.list"
	for name, tc := range map[string]struct {
		one    workflows.Step
		signal time.Duration
	}{
		"handler, signal before the read":  {one: step("one", "test.flaky"), signal: 500 * time.Millisecond},
		"handler, signal after the read":   {one: step("one", "test.flaky"), signal: 30 * time.Second},
		"for_each, signal before the read": {one: forEach, signal: 500 * time.Millisecond},
		"for_each, signal after the read":  {one: forEach, signal: 30 * time.Second},
		"parallel, signal after the read":  {one: workflows.Step{Name: "one", Parallel: []workflows.Step{step("p1", "test.flaky"), step("p2", "test.ok")}}, signal: 30 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := stepRetrySetup(t, w2Claims)
			// The signal after the read comes within claim_wait.
			opts := workflows.TypeOptions{ClaimWait: 2 * time.Minute, Steps: []workflows.Step{step("zero", "test.after"), tc.one, step("two", "test.after")}}
			in := b.claim(t, "demo.pipeline", map[string]any{"list": []int{1, 2}}, opts)
			b.env.RegisterDelayedCallback(func() {
				b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w2", Attempts: in.Claim.Attempts + 1})
			}, tc.signal)
			res, err := b.run(in)
			require.NoError(t, err)
			require.Equal(t, "w2", res.WorkerID, "reported with w2's claim")
			require.EqualValues(t, 2, b.after.Load(), "steps zero and two, once each")
			require.Positive(t, b.retried.Load(), "the step ran again for w2's claim")
			st := b.task(t, in.Task.ID)
			require.Equal(t, "completed", st.Status)
			for _, c := range b.tm.Completions(in.Task.ID) {
				require.Equal(t, "w2", c.WorkerID)
			}
		})
	}
}

// The retry's read showed the task claimed past the run's claim, and the
// step waited for that claim's signal; meanwhile the step's context was
// cancelled (its parallel group failed, or the run was cancelled), so the
// step does not run again when w2's claim comes. w2's claim holds all the
// same: it gets a run of its own, which runs the steps for it. (Found by
// a review: the run ended ClaimLost, judging w2's claim over, and the
// task stayed claimed by w2 with no run until the claim timed out.)
func TestSteps_retried_step_attempt_cancelled_while_it_waits_for_a_newer_claim_continues_as_new(t *testing.T) {
	t.Parallel()
	for name, cancelRun := range map[string]bool{"its group fails": false, "the run is cancelled": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := stepRetrySetup(t, w2Claims)
			group := workflows.Step{Name: "group", Parallel: []workflows.Step{step("p1", "test.flaky")}}
			if !cancelRun {
				group.Parallel = append(group.Parallel, workflows.Step{Name: "p2", WaitFor: &workflows.WaitFor{Signal: "never", Timeout: 10 * time.Second}})
			}
			opts := workflows.TypeOptions{ClaimWait: 2 * time.Minute, Steps: []workflows.Step{group, step("two", "test.after")}}
			in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, opts)
			if cancelRun {
				b.env.RegisterDelayedCallback(b.env.CancelWorkflow, 10*time.Second)
			}
			// After the group failed (10 s), within claim_wait of the read.
			b.env.RegisterDelayedCallback(func() {
				b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w2", Attempts: in.Claim.Attempts + 1})
			}, 30*time.Second)
			_, err := b.run(in)
			var can *workflow.ContinueAsNewError
			require.True(t, errors.As(err, &can), "continued as new for w2's claim: %v", err)
			var next workflows.TaskInput
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
			require.Equal(t, "w2", next.Claim.WorkerID)
			require.Equal(t, in.Claim.Attempts+1, next.Claim.Attempts)
			require.Len(t, next.Options.Steps, 2, "the new run has the task's steps")
			require.Zero(t, b.retried.Load())
			require.Zero(t, b.after.Load())
			require.Empty(t, b.tm.Completions(in.Task.ID), "nothing is reported")
			require.Equal(t, "w2", b.task(t, in.Task.ID).ClaimedBy)
		})
	}
}

// A step that runs again for a newer claim counts its result's room in
// the run's history once: its attempt that found the claim over lands
// nothing. Here 47 steps run at once, each of whose result may take 1 MiB
// of the 48 MiB a run's history may reach (HistoryGuardBytes): counted
// twice, the step found no room and failed HistoryFull. (Found by a
// review.)
func TestSteps_step_run_again_for_a_newer_claim_counts_its_room_once(t *testing.T) {
	t.Parallel()
	b := stepRetrySetup(t, w2Claims)
	group := workflows.Step{Name: "group", Parallel: []workflows.Step{step("p1", "test.flaky")}}
	for i := range 46 {
		group.Parallel = append(group.Parallel, step(fmt.Sprintf("slow%d", i), "test.until-flaky-ran"))
	}
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: []workflows.Step{group}})
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w2", Attempts: in.Claim.Attempts + 1})
	}, 500*time.Millisecond)
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "w2", res.WorkerID)
	require.EqualValues(t, 1, b.retried.Load())
}

// A newer claim reached the run, but the retry's read showed it over too
// (w2's claim timed out in turn and py claimed the task): it gets no run,
// and the run ends ClaimLost.
func TestSteps_retried_step_attempt_no_run_for_a_newer_claim_the_read_showed_over(t *testing.T) {
	t.Parallel()
	b := stepRetrySetup(t, func(b *testBundle) error {
		if err := w2Claims(b); err != nil {
			return err
		}
		_, err := b.claimAfterTimeout("demo.pipeline", "py")
		return err
	})
	in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: []workflows.Step{step("one", "test.flaky"), step("two", "test.after")}})
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w2", Attempts: in.Claim.Attempts + 1})
	}, 500*time.Millisecond)
	_, err := b.run(in)
	requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.Zero(t, b.retried.Load())
	require.Zero(t, b.after.Load())
	require.Equal(t, "py", b.task(t, in.Task.ID).ClaimedBy)
}

// Only a step whose handler runs on the bridge's own worker asks for the
// read: a step routed to another task queue does not (its worker, perhaps
// of another SDK, may not read), nor does a run recorded before
// stepsReadOnRetry, nor one whose input does not ask (an older bridge's).
func TestSteps_read_on_retry_is_asked_only_where_it_is_read(t *testing.T) {
	t.Parallel()
	routed := step("routed", "test.ok")
	routed.TaskQueue = "python"
	for name, tc := range map[string]struct {
		oldRun, oldBridge bool
		want              map[string]bool
	}{
		"current":             {want: map[string]bool{"own": true, "routed": false}},
		"run before the read": {oldRun: true, want: map[string]bool{"own": false, "routed": false}},
		"older bridge":        {oldBridge: true, want: map[string]bool{"own": false, "routed": false}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := stepRetrySetup(t, func(*testBundle) error { return nil })
			var mu sync.Mutex
			asked := map[string]bool{}
			b.env.SetOnActivityStartedListener(func(_ *activity.Info, _ context.Context, args converter.EncodedValues) {
				var in activities.HandlerInput
				if args.Get(&in) == nil && in.Step != "" {
					mu.Lock()
					asked[in.Step] = in.ReadOnRetry
					mu.Unlock()
				}
			})
			if tc.oldRun {
				b.env.OnGetVersion("progress-in-handlers", workflow.DefaultVersion, 4).Return(workflow.Version(3))
			}
			in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: []workflows.Step{step("own", "test.ok"), routed}})
			in.ReadOnRetry = !tc.oldBridge
			_, err := b.run(in)
			require.NoError(t, err)
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, tc.want, asked)
		})
	}
}

// A step handler's own error of type ClaimOver is a failure like any
// other: only the bridge's read, which says what it saw, ends a run
// unreported; a handler routed to another task queue, which was not asked
// to read, cannot end it so even with such details.
func TestSteps_handlers_own_ClaimOver_error_is_a_failure(t *testing.T) {
	t.Parallel()
	routed := step("one", "test.liar-with-details")
	routed.TaskQueue = "python"
	for name, one := range map[string]workflows.Step{
		"no details":               step("one", "test.liar"),
		"routed, with what it saw": routed,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := stepRetrySetup(t, func(*testBundle) error { return nil })
			in := b.claim(t, "demo.pipeline", map[string]any{"n": 1}, workflows.TypeOptions{Steps: []workflows.Step{one, step("two", "test.after")}})
			_, err := b.run(in)
			requireErrorType(t, err, workflows.TaskFailedErrorType)
			require.Len(t, b.tm.Completions(in.Task.ID), 1, "the failure is reported")
		})
	}
}
