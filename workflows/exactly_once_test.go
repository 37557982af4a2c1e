package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// Each test here is one way the exactly-once promise broke (the
// exactly-once issue's list); each failed before its fix.

// afterFirstComplete returns a middleware that, once the first complete
// call has been served, runs then(next) against the server itself: a claim
// by a bridge slipping in between a post and its retry.
func afterFirstComplete(then func(next http.Handler)) (func(http.Handler) http.Handler, *sync.Once) {
	var once sync.Once
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(w, r)
			if strings.HasSuffix(r.URL.Path, "/complete") {
				once.Do(func() { then(next) })
			}
		})
	}, &once
}

// claimVia claims the next task of a type id as worker, through h.
func claimVia(t *testing.T, h http.Handler, worker, typeID string) {
	body := `{"worker_id":"` + worker + `","task_type_id":` + typeID + `}`
	req := httptest.NewRequest(http.MethodPost, "/api/tasks/claim", strings.NewReader(body))
	req.Header.Set("X-API-Key", "k")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("claim as %s: %d %s", worker, rec.Code, rec.Body)
	}
}

// 1. A failure whose answer was lost after TaskManager wrote it re-queues
// the task, and this same worker claims it again at once. The retried
// report must not post the failure again: that would burn the new claim's
// attempt without its handler ever running.
func TestExactlyOnce_lost_failure_answer_then_reclaimed_by_same_worker(t *testing.T) {
	t.Parallel()
	var b *testBundle
	wrap, _ := afterFirstComplete(func(next http.Handler) { claimVia(t, next, "w1", string(b.types["example.error"])) })
	b = setup(t, nil, wrap)
	in := b.claim(t, "example.error", map[string]any{"message": "boom"}, workflows.TypeOptions{})
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 502, After: true, Count: 1})

	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	comps := b.tm.Completions(in.Task.ID)
	require.Len(t, comps, 1, "the failure is posted once; the retry reads the task and finds it")
	st := b.task(t, in.Task.ID)
	require.Equal(t, "claimed", st.Status, "the new claim still holds the task, its attempt unspent")
	require.Equal(t, 2, st.Attempts)
}

// 1b. Same, claimed again by another worker: the old failure must not be
// sent for the new claim when that claim's signal arrives; the run goes on
// as new for it, so its handler runs.
func TestExactlyOnce_lost_failure_answer_then_reclaimed_by_other_worker(t *testing.T) {
	t.Parallel()
	var b *testBundle
	wrap, _ := afterFirstComplete(func(next http.Handler) { claimVia(t, next, "w2", string(b.types["example.error"])) })
	b = setup(t, nil, wrap)
	in := b.claim(t, "example.error", map[string]any{"message": "boom"}, workflows.TypeOptions{})
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 502, After: true, Count: 1})
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w2", Attempts: 2})
	}, 500*time.Millisecond)

	_, err := b.run(in)
	var can *workflow.ContinueAsNewError
	if !errors.As(err, &can) {
		require.Failf(t, "want the run to continue as new for the new claim", "got %v", err)
	}
	require.Len(t, b.tm.Completions(in.Task.ID), 1, "the old failure is never posted for the new claim")
	st := b.task(t, in.Task.ID)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, "w2", st.ClaimedBy)
}

// 2. A retried report (Temporal lost the first attempt's result, or its
// answer was lost) reads the task first and posts nothing once the outcome
// landed; before, it posted again and met "not in claimed state".
func TestExactlyOnce_retried_report_reads_first_and_posts_nothing(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "once"}, workflows.TypeOptions{})
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 503, After: true, Count: 1})
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", res.Status)
	for _, c := range b.tm.Completions(in.Task.ID)[1:] {
		require.Failf(t, "an outcome was posted again after it landed", "%+v", c)
	}
}

// 3. PHP stores result and error re-encoded, where each byte that is not
// UTF-8 takes 3: a result that looks small can be too large to store, and
// TaskManager then answers a 500 "Data too long". The size is measured as
// stored, and that 500 fails the task with a clear message (before, it was
// retried forever and the task stayed claimed).
func TestExactlyOnce_result_too_long_as_stored_fails_the_task(t *testing.T) {
	t.Parallel()
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.binary", func(ctx context.Context, p struct{}) (json.RawMessage, error) {
			return json.RawMessage(`{"blob":"` + strings.Repeat("\xff", 30_000) + `"}`), nil
		})
	})
	in := b.claim(t, "test.binary", map[string]any{"x": 1}, workflows.TypeOptions{})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "pending", st.Status)
	require.Contains(t, st.Error, "as TaskManager stores it")
	for _, c := range b.tm.Completions(in.Task.ID) {
		require.NotEqual(t, http.StatusInternalServerError, c.Status, "nothing TaskManager cannot store is posted")
	}
}

func TestExactlyOnce_error_too_long_as_stored_is_cut(t *testing.T) {
	t.Parallel()
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.binaryerror", func(ctx context.Context, p struct{}) (struct{}, error) {
			return struct{}{}, activities.Permanent(errors.New(strings.Repeat("\xfe", 40_000)))
		})
	})
	in := b.claim(t, "test.binaryerror", map[string]any{"x": 1}, workflows.TypeOptions{})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "pending", st.Status, "the failure landed")
	require.LessOrEqual(t, len(st.Error), 65535)
	require.True(t, strings.HasSuffix(st.Error, "(truncated)"))
}

func TestExactlyOnce_data_too_long_500_fails_the_task(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "big"}, workflows.TypeOptions{})
	b.tm.InjectFault(dataTooLong("result_json", 1))
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "pending", st.Status)
	require.Contains(t, st.Error, "as too large")
	require.Contains(t, st.Error, "result_json")
}

// A run cancelled before its handler starts reports "was cancelled"; when
// TaskManager answers that post with "Data too long", the short message
// that replaces it lands once, and no handler runs (the simulation's
// seed 1 met this).
func TestExactlyOnce_cancelled_before_handler_then_data_too_long(t *testing.T) {
	t.Parallel()
	var ran atomic.Int32
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.counted", func(ctx context.Context, p struct{}) (struct{}, error) {
			ran.Add(1)
			return struct{}{}, nil
		})
	})
	in := b.claim(t, "test.counted", map[string]any{"x": 1}, workflows.TypeOptions{})
	b.tm.InjectFault(dataTooLong("error_message", 1))
	b.env.RegisterDelayedCallback(b.env.CancelWorkflow, 0)
	_, err := b.run(in)
	var canceled *temporal.CanceledError
	require.True(t, errors.As(err, &canceled), "the run ends cancelled: %v", err)
	require.Zero(t, ran.Load(), "the handler never ran")
	st := b.task(t, in.Task.ID)
	require.Equal(t, "pending", st.Status, "the failure landed: TaskManager re-queues the task")
	require.Equal(t, "test.counted failed; TaskManager refused its error message as too large", st.Error)
	require.Equal(t, 1, acceptedCompletions(b, in.Task.ID))
}

// TaskManager refuses the error message as too large, then the bridge's
// short one too (a fault: it cannot be its size): the short one is retried
// until it lands. Before, the run gave up and ended with the task still
// claimed, its place freed in the bridge while TaskManager held the claim
// (the simulation's seed 41: claims past max_in_flight).
func TestExactlyOnce_short_message_refused_too_is_retried(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.error", map[string]any{"message": "boom"}, workflows.TypeOptions{})
	b.tm.InjectFault(dataTooLong("error_message", 2))
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "pending", st.Status, "the failure landed: TaskManager re-queues the task")
	require.Equal(t, "example.error failed; TaskManager refused its error message as too large", st.Error)
	require.Equal(t, 1, acceptedCompletions(b, in.Task.ID))
}

// acceptedCompletions counts the complete calls TaskManager recorded for a
// task.
func acceptedCompletions(b *testBundle, taskID string) int {
	n := 0
	for _, c := range b.tm.Completions(taskID) {
		if c.Accepted {
			n++
		}
	}
	return n
}

// 4. The PHP deployment stores {} as null: after a lost answer, the
// read-back must still recognise an empty result as ours.
func TestExactlyOnce_empty_result_recognised_after_lost_answer(t *testing.T) {
	t.Parallel()
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.empty", func(ctx context.Context, p struct{}) (struct{}, error) {
			return struct{}{}, nil
		})
	})
	in := b.claim(t, "test.empty", map[string]any{"x": 1}, workflows.TypeOptions{})
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 502, After: true, Count: 1})
	res, err := b.run(in)
	require.NoError(t, err, "the outcome landed: the run completes")
	require.Equal(t, "completed", res.Status)
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
	require.Len(t, b.tm.Completions(in.Task.ID), 1)
}

// 7. A cancel that arrives while the report is retrying (a TaskManager
// outage) must not cancel the report: the outcome lands, then the run
// ends cancelled.
func TestExactlyOnce_cancel_during_report_keeps_the_outcome(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "cancel me"}, workflows.TypeOptions{})
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 503, Count: 5})
	b.env.RegisterDelayedCallback(b.env.CancelWorkflow, 2*time.Second) // during the report's retries
	_, err := b.run(in)
	var canceled *temporal.CanceledError
	require.True(t, errors.As(err, &canceled), "the run ends cancelled: %v", err)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "completed", st.Status, "the outcome was reported all the same")
	require.Equal(t, 1, acceptedCompletions(b, in.Task.ID))
}

// 11. A proxy's HTML 400 page in front of TaskManager is not TaskManager
// refusing the outcome: the report retries until TaskManager has it.
func TestExactlyOnce_proxy_400_page_is_retried(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "proxy"}, workflows.TypeOptions{})
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 400, Count: 3,
		Body: "<html><head><title>400 Bad Request</title></head><body><center><h1>400 Bad Request</h1></center><hr><center>nginx</center></body></html>"})
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", res.Status)
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status)
}

// A result TaskManager itself rejects as invalid (its own 400) becomes a
// failure that says so: the task never stays claimed.
func TestExactlyOnce_rejected_result_becomes_a_failure(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "rejected"}, workflows.TypeOptions{})
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 400, Count: 1,
		Body: `{"success":false,"error":"Validation failed","details":["Field 'result' must be of type object"],"timestamp":1795936223}`})
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	st := b.task(t, in.Task.ID)
	require.Equal(t, "pending", st.Status)
	require.Contains(t, st.Error, "as invalid")
}

// A claim that reaches a run by signal is recorded in the run's memo, so a
// bridge recovering that claim finds the run that served it (found by the
// fault simulation, seed 3: a recovered claim whose outcome this run had
// already reported was started again).
func TestExactlyOnce_claim_moves_are_recorded_in_the_memo(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "memo"}, workflows.TypeOptions{})
	newClaim := b.reclaim(t, "example.echo")
	b.env.OnUpsertMemo(map[string]any{workflows.MemoAttempt: newClaim.Attempts, workflows.MemoWorkerID: newClaim.WorkerID}).Return(nil).Once()
	b.env.RegisterDelayedCallback(func() { b.env.SignalWorkflow(workflows.ClaimSignalName, newClaim) }, 0)
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "w2", res.WorkerID)
	b.env.AssertExpectations(t)
}

// A claim older than half the claim timeout may have been handed out again
// to this same worker id, and TaskManager checks only the worker id: the
// report reads first and waits for that claim to reach the run, instead of
// posting an old failure that would burn the new claim's attempt (found by
// the fault simulation, seed 9). The claim's age is not known here (a
// claim a sweep found); with a known age the run reads at its start
// (TestExactlyOnce_late_start_of_a_replaced_claim_runs_no_handler).
func TestExactlyOnce_old_claim_reads_first_before_posting(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.error", map[string]any{"message": "slow failure"}, workflows.TypeOptions{})
	// the claim times out; this same worker claims the task again
	_, err := b.claimAfterTimeout("example.error", "w1")
	require.NoError(t, err)
	postedEarly := -1
	b.env.RegisterDelayedCallback(func() {
		postedEarly = len(b.tm.Completions(in.Task.ID))
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 2})
	}, 30*time.Second)

	_, err = b.run(in)
	require.Zero(t, postedEarly, "nothing is posted before the new claim reaches the run")
	requireErrorType(t, err, workflows.TaskFailedErrorType) // not continued as new: no handler runs for an ended claim
	comps := b.tm.Completions(in.Task.ID)
	require.Len(t, comps, 1)
	require.Equal(t, 2, comps[0].AttemptsBefore, "posted once the claim it is posted for (attempt 2) reached the run")
}

// A fresh claim's report posts at once, without reading the task first.
func TestExactlyOnce_fresh_claim_posts_without_reading(t *testing.T) {
	t.Parallel()
	var gets atomic.Int32
	count := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/tasks/") {
				gets.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	}
	b := setup(t, nil, count)
	in := b.claim(t, "example.echo", map[string]any{"message": "fresh"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now()
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", res.Status)
	require.Zero(t, gets.Load(), "no read on the happy path")
}

// 4b. PHP re-encodes a result as it stores it (a nested {} reads back as
// [], an object keyed "0", "1" as a list): the read-back after a lost
// answer still recognises it as ours.
func TestExactlyOnce_result_reencoded_by_PHP_recognised_after_lost_answer(t *testing.T) {
	t.Parallel()
	b := setup(t, func(reg *activities.Registry) {
		activities.Register(reg, "test.phpish", func(ctx context.Context, p struct{}) (json.RawMessage, error) {
			return json.RawMessage(`{"empty":{},"list":{"0":"a","1":"b"}}`), nil
		})
	})
	in := b.claim(t, "test.phpish", map[string]any{"x": 1}, workflows.TypeOptions{})
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 502, After: true, Count: 1})
	res, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", res.Status)
	require.JSONEq(t, `{"empty":[],"list":["a","b"]}`, string(b.task(t, in.Task.ID).Result), "stored as PHP stores it")
}

// A post of an old claim's failure that landed late (after its answer was
// lost) on this same worker's newer claim ended that claim: the run must
// not go on as new for it, or a handler would run for a claim that is over
// (found by the fault simulation, seed 18).
func TestExactlyOnce_no_continue_for_a_claim_a_late_post_ended(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.error", map[string]any{"message": "late"}, workflows.TypeOptions{})
	calls := 0
	b.env.OnActivity(activities.ReportActivityName, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, ri activities.ReportInput) (activities.ReportOutput, error) {
			calls++
			if calls == 1 {
				return activities.ReportOutput{}, activities.Transient(errors.New("timeout: the post may land later"), 0)
			}
			require.True(t, ri.ReadFirst, "a report after a lost answer reads first")
			// The late post landed on claim 2 (same worker id): the task is
			// pending at attempt 2 with this run's error.
			return activities.ReportOutput{Status: "pending (retry)", AlreadyRecorded: true, ReadStatus: "pending", ReadAttempts: 2}, nil
		})
	b.env.RegisterDelayedCallback(func() { // while the report's first attempt waits for its retry
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 2})
	}, 500*time.Millisecond)
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType) // not continued as new
	require.Equal(t, 2, calls)
}

// dataTooLong is the PHP deployment's 500 for a complete call whose column
// is over MariaDB's limit, answered count times.
func dataTooLong(column string, count int) devserver.Fault {
	return devserver.Fault{Path: "/complete", Status: 500, Count: count,
		Body: `{"success":false,"error":"SQLSTATE[22001]: String data, right truncated: 1406 Data too long for column '` + column + `' at row 1","timestamp":1795936223}`}
}
