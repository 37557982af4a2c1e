package workflows_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// A handler attempt that Temporal retries reads the task first, and runs
// no handler for a claim that is over: here the claim timed out during
// the first attempt and a worker that does not signal this run (a Python
// worker during a migration, say) claimed the task, or claimed it and
// reported its outcome. The run then ends ClaimLost and posts nothing.
// Before, the retry ran the handler beside that worker's attempt (a gap
// the README named).
func TestExactlyOnce_retried_handler_attempt_runs_no_handler_for_a_claim_over(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		local  bool
		other  func(b *testBundle, id taskmanager.ID) error // what the other worker does with its claim
		status string
	}{
		{name: "claimed by another worker", status: taskmanager.StatusClaimed},
		{name: "claimed by another worker, local", local: true, status: taskmanager.StatusClaimed},
		{name: "completed by another worker", status: taskmanager.StatusCompleted, other: func(b *testBundle, id taskmanager.ID) error {
			_, err := b.api.Complete(context.Background(), id, taskmanager.Completion{WorkerID: "w2", Success: true, Result: json.RawMessage(`{"by":"w2"}`)})
			return err
		}},
		{name: "failed back to pending by another worker", status: taskmanager.StatusPending, other: func(b *testBundle, id taskmanager.ID) error {
			_, err := b.api.Complete(context.Background(), id, taskmanager.Completion{WorkerID: "w2", Error: "w2 failed it"})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var runs atomic.Int32
			var otherErr atomic.Value
			var b *testBundle
			b = setup(t, func(reg *activities.Registry) {
				reg.MustAdd("test.flaky", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
					if runs.Add(1) > 1 {
						return json.RawMessage(`{}`), nil
					}
					// The claim times out while this attempt runs; w2 claims the task.
					in, _ := activities.TaskInfo(ctx)
					task, err := b.claimAfterTimeout("test.flaky", "w2")
					if err == nil && string(task.ID) != in.TaskID {
						err = errors.New("w2 claimed another task")
					}
					if err == nil && tc.other != nil {
						err = tc.other(b, task.ID)
					}
					if err != nil {
						otherErr.Store(err)
					}
					return nil, errors.New("boom")
				}))
			})
			opts := workflows.TypeOptions{}
			if tc.local {
				opts.Local = workflows.Bool(true)
			}
			in := b.claim(t, "test.flaky", map[string]any{"n": 1}, opts)
			_, err := b.run(in)
			require.Nil(t, otherErr.Load())
			requireErrorType(t, err, activities.ErrTypeClaimLost)
			require.EqualValues(t, 1, runs.Load(), "the retry ran no handler")
			for _, c := range b.tm.Completions(in.Task.ID) {
				require.Equal(t, "w2", c.WorkerID, "this run posted nothing")
			}
			st := b.task(t, in.Task.ID)
			require.Equal(t, tc.status, st.Status, "the other worker's doing stands")
		})
	}
}

// A retried attempt whose claim holds (the same worker id: this claim,
// or this bridge's renewal of it) runs its handler, as before.
func TestRetriedHandlerAttempt_runs_while_the_claim_holds(t *testing.T) {
	t.Parallel()
	for _, renewed := range []bool{false, true} {
		var runs atomic.Int32
		var b *testBundle
		b = setup(t, func(reg *activities.Registry) {
			reg.MustAdd("test.flaky", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
				if runs.Add(1) > 1 {
					return json.RawMessage(`{"ok":true}`), nil
				}
				if renewed { // the claim times out, and this worker claims the task again
					if _, err := b.claimAfterTimeout("test.flaky", "w1"); err != nil {
						return nil, activities.Permanent(err)
					}
				}
				return nil, errors.New("boom")
			}))
		})
		in := b.claim(t, "test.flaky", map[string]any{"n": 1}, workflows.TypeOptions{})
		c2 := workflows.Claim{WorkerID: "w1", Attempts: in.Claim.Attempts + 1}
		if renewed {
			// The renewal reaches the run as the bridge sends it.
			b.env.RegisterDelayedCallback(func() { b.env.SignalWorkflow(workflows.ClaimSignalName, c2) }, time.Millisecond)
		}
		res, err := b.run(in)
		require.NoError(t, err, "renewed: %v", renewed)
		require.EqualValues(t, 2, runs.Load(), "the retry ran the handler")
		require.Equal(t, taskmanager.StatusCompleted, b.task(t, in.Task.ID).Status)
		require.True(t, res.Success)
	}
}

// A retried attempt that finds the task claimed by another bridge, whose
// claim reached the run by signal, runs no handler for the old claim: the
// run continues as new for the newer one, whose handler then runs.
func TestRetriedHandlerAttempt_claim_over_with_a_newer_claim_continues_as_new(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	var otherErr atomic.Value
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		reg.MustAdd("test.flaky", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
			if runs.Add(1) == 1 {
				if _, err := b.claimAfterTimeout("test.flaky", "w2"); err != nil {
					otherErr.Store(err)
				}
			}
			return nil, errors.New("boom")
		}))
	})
	in := b.claim(t, "test.flaky", map[string]any{"n": 1}, workflows.TypeOptions{})
	// w2's bridge signals its claim while the first attempt backs off.
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w2", Attempts: in.Claim.Attempts + 1})
	}, 500*time.Millisecond)
	_, err := b.run(in)
	require.Nil(t, otherErr.Load())
	var can *workflow.ContinueAsNewError
	require.ErrorAs(t, err, &can, "want the run to continue as new for w2's claim")
	var next workflows.TaskInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.Equal(t, "w2", next.Claim.WorkerID)
	require.EqualValues(t, 1, runs.Load(), "no handler ran for the old claim's retry")
	require.Empty(t, b.tm.Completions(in.Task.ID))
}

// rewriteReads rewrites each task object of the answers to GET
// /tasks/{id} with f.
func rewriteReads(f func(task map[string]any)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/tasks/") {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			var v any
			if json.Unmarshal(rec.Body.Bytes(), &v) == nil {
				var walk func(any)
				walk = func(x any) {
					switch t := x.(type) {
					case map[string]any:
						if _, ok := t["status"]; ok {
							f(t)
						}
						for _, c := range t {
							walk(c)
						}
					case []any:
						for _, c := range t {
							walk(c)
						}
					}
				}
				walk(v)
				b, _ := json.Marshal(v)
				rec.Body = bytes.NewBuffer(b)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		})
	}
}

// failsOnce is a handler that fails its first attempt and counts its runs.
func failsOnce(runs *atomic.Int32) activities.Handler {
	return activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
		if runs.Add(1) == 1 {
			return nil, errors.New("boom")
		}
		return json.RawMessage(`{"ok":true}`), nil
	})
}

// A read that names no holder (a TaskManager whose task rows lack
// claimed_by, or an odd status) is no proof that the claim is over: the
// retry runs its handler, and the outcome is reported. (Found by a
// review: such a read ended every retried run unreported, the task left
// claimed.)
func TestRetriedHandlerAttempt_read_that_names_no_holder_runs_the_handler(t *testing.T) {
	t.Parallel()
	for name, rewrite := range map[string]func(map[string]any){
		"no claimed_by":  func(m map[string]any) { delete(m, "claimed_by") },
		"unknown status": func(m map[string]any) { m["status"] = "processing"; m["claimed_by"] = "someone" },
	} {
		var runs atomic.Int32
		b := setup(t, func(reg *activities.Registry) { reg.MustAdd("test.flaky", failsOnce(&runs)) }, rewriteReads(rewrite))
		in := b.claim(t, "test.flaky", map[string]any{"n": 1}, workflows.TypeOptions{})
		// A claim made just now: the report posts without reading (a read
		// that names no holder would refuse it, as before this change).
		now := time.Now().UTC()
		b.env.SetStartTime(now)
		in.Claim.ClaimedAt = now
		_, err := b.run(in)
		require.NoError(t, err, name)
		require.EqualValues(t, 2, runs.Load(), name)
		require.Equal(t, taskmanager.StatusCompleted, b.task(t, in.Task.ID).Status, name)
	}
}

// A handler's own error of type ClaimOver is a failure like any other:
// only the bridge's read, which says what it saw, ends a run unreported.
// (Found by a review: the run trusted the type, and the task stayed
// claimed with its failure never posted.)
func TestRetriedHandlerAttempt_handlers_own_ClaimOver_error_is_a_failure(t *testing.T) {
	t.Parallel()
	b := setup(t, func(reg *activities.Registry) {
		reg.MustAdd("test.own", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
			return nil, temporal.NewNonRetryableApplicationError("quota over for this month", activities.ErrTypeClaimOver, nil)
		}))
	})
	in := b.claim(t, "test.own", map[string]any{"n": 1}, workflows.TypeOptions{})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Equal(t, taskmanager.StatusPending, st.Status, "the failure is reported, and the task queued again")
	require.Contains(t, st.Error, "quota over for this month")
}

// The read's message quotes TaskManager's claimed_by cut short.
func TestRetriedHandlerAttempt_claim_over_message_is_bounded(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	huge := strings.Repeat("\x01", 1<<20)
	b := setup(t, func(reg *activities.Registry) { reg.MustAdd("test.flaky", failsOnce(&runs)) },
		rewriteReads(func(m map[string]any) { m["claimed_by"], m["attempts"] = huge, 2 })) // a later claim
	in := b.claim(t, "test.flaky", map[string]any{"n": 1}, workflows.TypeOptions{})
	_, err := b.run(in)
	appErr := requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.Less(t, len(appErr.Message()), 1024, taskmanager.Clip(appErr.Message(), 200, "…"))
	require.EqualValues(t, 1, runs.Load())
}

// A retried local attempt waits in this process for the earlier one, whose
// handler outlived its timeout, and reads the task only then: here the
// claim timed out and w2 claimed the task while it waited, so no handler
// runs beside w2. (Found by a review: the read came before the wait.)
func TestRetriedHandlerAttempt_reads_after_waiting_for_the_earlier_attempt(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	var besideW2 atomic.Bool
	var b *testBundle
	var taskID string
	b = setup(t, func(reg *activities.Registry) {
		reg.MustAdd("test.stubborn", activities.HandlerFunc(func(ctx context.Context, _ json.RawMessage) (json.RawMessage, error) {
			if runs.Add(1) > 1 {
				if st, _ := b.tm.Task(taskID); st.ClaimedBy == "w2" {
					besideW2.Store(true)
				}
				return json.RawMessage(`{}`), nil
			}
			<-ctx.Done() // the attempt times out; this handler goes on
			// Time for the retry to start (and, before the fix, to read).
			time.Sleep(300 * time.Millisecond)
			_, _ = b.claimAfterTimeout("test.stubborn", "w2")
			return nil, errors.New("late")
		}))
	})
	opts := workflows.TypeOptions{}
	opts.Local = workflows.Bool(true)
	opts.StartToCloseTimeout = 2 * time.Second
	opts.Retry.InitialInterval = 10 * time.Millisecond
	in := b.claim(t, "test.stubborn", map[string]any{"n": 1}, opts)
	taskID = in.Task.ID
	_, err := b.run(in)
	require.False(t, besideW2.Load(), "a retried attempt's handler started while w2 held the task")
	requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.Equal(t, "w2", b.task(t, in.Task.ID).ClaimedBy)
}

// A newer claim that reached the run, but that the retry's read showed
// over too (this bridge's renewal, of unknown age, timed out in turn and
// py claimed the task), gets no run: the run ends ClaimLost. (Found by a
// review: the run continued as new for it, and that run ran the handler
// beside py.)
func TestRetriedHandlerAttempt_no_run_for_a_newer_claim_the_read_showed_over(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	var b *testBundle
	b = setup(t, func(reg *activities.Registry) {
		reg.MustAdd("test.flaky", activities.HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
			if runs.Add(1) > 1 {
				return json.RawMessage(`{}`), nil
			}
			for _, w := range []string{"w1", "py"} {
				_, _ = b.claimAfterTimeout("test.flaky", w)
			}
			return nil, errors.New("boom")
		}))
	})
	in := b.claim(t, "test.flaky", map[string]any{"n": 1}, workflows.TypeOptions{})
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: in.Claim.Attempts + 1})
	}, 500*time.Millisecond)
	_, err := b.run(in)
	requireErrorType(t, err, activities.ErrTypeClaimLost)
	require.EqualValues(t, 1, runs.Load())
	st := b.task(t, in.Task.ID)
	require.Equal(t, "py", st.ClaimedBy)
	require.Empty(t, b.tm.Completions(in.Task.ID))
}

// A read that TaskManager answers too slowly is given up on well within
// the attempt's time, and the handler runs (the report decides): a stalled
// TaskManager must not use up the retries of a handler that would succeed.
// (Found by a review: the read ran to the attempt's deadline, and the task
// failed "timed out" with its handler never run again.)
func TestRetriedHandlerAttempt_slow_read_runs_the_handler(t *testing.T) {
	t.Parallel()
	var reads atomic.Int32
	slow := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/tasks/") && reads.Add(1) == 1 {
				select { // stalls until the client gives up
				case <-r.Context().Done():
					return
				case <-time.After(time.Minute):
				}
			}
			next.ServeHTTP(w, r)
		})
	}
	var runs atomic.Int32
	b := setup(t, func(reg *activities.Registry) { reg.MustAdd("test.flaky", failsOnce(&runs)) }, slow)
	opts := workflows.TypeOptions{}
	opts.StartToCloseTimeout = 4 * time.Second // under the client's own timeout (5s)
	opts.Retry.MaximumAttempts = 2
	in := b.claim(t, "test.flaky", map[string]any{"n": 1}, opts)
	now := time.Now().UTC()
	b.env.SetStartTime(now)
	in.Claim.ClaimedAt = now // a young claim: the report posts without reading
	_, err := b.run(in)
	require.NoError(t, err)
	require.EqualValues(t, 2, runs.Load(), "the retry ran its handler")
	require.Equal(t, taskmanager.StatusCompleted, b.task(t, in.Task.ID).Status)
}
