package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

func newAPI(t *testing.T, url string) *taskmanager.Client {
	t.Helper()
	api, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: apiKey})
	if err != nil {
		t.Fatal(err)
	}
	return api
}

func register(t *testing.T, api *taskmanager.Client, name string) {
	t.Helper()
	_, err := api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: name, Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	if err != nil {
		t.Fatal(err)
	}
}

func create(t *testing.T, api *taskmanager.Client, kind string, p params) string {
	t.Helper()
	c, err := api.CreateTask(context.Background(), kind, p)
	if err != nil {
		t.Fatal(err)
	}
	return string(c.ID)
}

// cancelOne cancels the open workflow of one task (chosen by pick) and
// returns its task id, or "" when none is open, and when the cancel was
// asked for.
func (w *world) cancelOne(pick uint64) (string, time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := w.tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: "ExecutionStatus = 'Running'"})
	if err != nil || len(resp.Executions) == 0 {
		w.note("  (no running workflow to cancel: %v)", err)
		return "", time.Time{}
	}
	ids := make([]string, 0, len(resp.Executions))
	for _, ex := range resp.Executions {
		if ex.GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
			ids = append(ids, ex.GetExecution().GetWorkflowId())
		}
	}
	if len(ids) == 0 {
		return "", time.Time{}
	}
	sort.Strings(ids)
	id := ids[pick%uint64(len(ids))]
	asked := time.Now()
	if err := w.tc.CancelWorkflow(ctx, id, ""); err != nil {
		w.note("  (cancel %s: %v)", id, err)
		return "", time.Time{}
	}
	w.note("  cancelled workflow %s", id)
	return strings.TrimPrefix(id, workflowPrefix), asked
}

// waitFinal waits until every task is completed or failed, or the deadline
// passes, and reports whether they all finished.
func waitFinal(ctx context.Context, w *world, tasks []simTask, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		final := 0
		for _, tk := range tasks {
			if st, _ := w.tm.Task(tk.id); st.Status == "completed" || st.Status == "failed" {
				final++
			}
		}
		if final == len(tasks) {
			w.note("every task is final")
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

type report struct {
	violations []string
	summary    string
}

// check verifies the invariants at the end of a run:
//
//  1. the run ends: every task is final, and the bridges stop cleanly;
//  2. each task ends in the final state its handler decided (a cancel from
//     Temporal or an injected "Data too long" may turn it into a failure
//     that says so);
//  3. each success is posted once, and no outcome is posted once one has
//     landed (no complete call reaches a task that is not claimed);
//  4. no handler starts for a task that is not claimed;
//  5. a bridge never claims while max_in_flight tasks are claimed by it.
func check(w *world, sc scenario, st *state, finished bool, stopErrs []error) report {
	var v []string
	add := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	if !finished {
		add("the run did not end: some tasks are not final 4 minutes after the faults stopped")
	}
	for _, err := range stopErrs {
		add("a bridge did not stop cleanly: %v", err)
	}

	tooLarge := 0
	counts := map[string]int{}
	for _, tk := range sc.tasks {
		ts, _ := w.tm.Task(tk.id)
		counts[ts.Status]++
		expectState(tk, ts, st, &tooLarge, add)

		accepted, acceptedSuccess := 0, 0
		var lastFailure time.Time
		for _, c := range w.tm.Completions(tk.id) {
			if c.Accepted && !c.Success {
				// Each failure that lands ends a claim; the next one must
				// come from a handler that ran since, never from the same
				// outcome posted again for a newer claim.
				cancelled := cancelledBetween(st.cancelledAt[tk.id], lastFailure, c.At)
				if !lastFailure.IsZero() && !noHandlerFailure(c.Error, cancelled) && !w.obs.startedBetween(tk.id, lastFailure, c.At) {
					add("task %s (%s): failure %q landed for attempt %d with no handler run since the previous failure landed: an old outcome posted for a newer claim",
						tk.id, tk.kind, short(c.Error), c.AttemptsBefore)
				}
				lastFailure = c.At
			}
			if c.Accepted {
				accepted++
				if c.Success {
					acceptedSuccess++
				}
			}
			// (A late write was sent while the claim held the task; what
			// it does when it lands is checked by the other invariants.)
			if c.StatusBefore != "" && c.StatusBefore != "claimed" && !c.Late {
				add("task %s (%s): an outcome (success=%v) was posted by %s while the task was %q (attempt %d): posted after an outcome landed",
					tk.id, tk.kind, c.Success, c.WorkerID, c.StatusBefore, c.AttemptsBefore)
			}
		}
		if acceptedSuccess > 1 {
			add("task %s (%s): %d successes accepted", tk.id, tk.kind, acceptedSuccess)
		}
		if ts.Status == "completed" && acceptedSuccess != 1 {
			add("task %s (%s): completed with %d accepted successes", tk.id, tk.kind, acceptedSuccess)
		}
		if accepted > ts.Attempts {
			add("task %s (%s): %d outcomes accepted for %d claims", tk.id, tk.kind, accepted, ts.Attempts)
		}
	}
	if tooLarge > st.tooLongFaults {
		add("%d tasks failed as too large, but only %d such answers were injected", tooLarge, st.tooLongFaults)
	}
	for _, c := range w.tm.Claims() {
		// A claim served late was sent earlier, perhaps by a process that
		// has died since: the bridge cannot count it until a sweep finds it.
		if c.HeldByWorker >= maxInFlight && !c.Late {
			add("at %.2fs worker %s claimed task %s (attempt %d) while it held %d claimed tasks %v (max_in_flight %d)",
				c.At.Sub(w.start).Seconds(), c.WorkerID, c.TaskID, c.Attempts, c.HeldByWorker, c.Held, maxInFlight)
		}
	}
	w.obs.mu.Lock()
	v = append(v, w.obs.violations...)
	starts, overlaps, otherRun := w.obs.starts, w.obs.overlaps, w.obs.otherRun
	w.obs.mu.Unlock()

	stats := w.tm.Stats()
	summary := fmt.Sprintf("%d tasks (%s), %d handler starts (%d while another ran, %d of those another run's; %d not run, their claim over), %d claims, %d complete calls (%d accepted), %d cancels, %d violations",
		len(sc.tasks), fmtCounts(counts), starts, overlaps, otherRun, claimOvers(w.dir), stats.Claimed, stats.CompleteCalls, stats.AcceptedCompletions, len(st.cancelled), len(v))
	return report{violations: v, summary: summary}
}

// noHandlerFailure reports whether a failure message is one a run posts
// without running the handler for its claim: a cancel, a start that
// failed, a task it cannot read. cancelled: a cancel of the task's run was
// asked for since the task's previous failure landed. Its "was cancelled"
// may then reach TaskManager in the short form a "Data too long" answer
// leaves ("<type> failed; TaskManager refused its error message as too
// large"): seed 1 met that, a run cancelled before its handler started.
func noHandlerFailure(msg string, cancelled bool) bool {
	switch {
	case strings.Contains(msg, "was cancelled"), strings.Contains(msg, "could not start"), strings.Contains(msg, "cannot read this task"):
		return true
	case cancelled && strings.HasSuffix(msg, " failed; TaskManager refused its error message as too large"):
		return true
	}
	return false
}

// cancelledBetween reports whether a cancel was asked for in (from, to);
// a zero from is the beginning.
func cancelledBetween(asked []time.Time, from, to time.Time) bool {
	for _, at := range asked {
		if at.After(from) && at.Before(to) {
			return true
		}
	}
	return false
}

// startedBetween reports whether a handler of the task started in (from, to).
func (o *observer) startedBetween(taskID string, from, to time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, at := range o.startedAt[taskID] {
		if at.After(from) && at.Before(to) {
			return true
		}
	}
	return false
}

// expectState checks a task's final state against its kind.
func expectState(tk simTask, ts devserver.TaskState, st *state, tooLarge *int, add func(string, ...any)) {
	cancelled := st.cancelled[tk.id]
	allowedFailure := func(msg string) bool {
		switch {
		case cancelled && strings.Contains(msg, "was cancelled"):
			return true
		case strings.Contains(msg, "TaskManager refused") && strings.Contains(msg, "as too large"):
			*tooLarge++
			return true
		}
		return false
	}
	switch {
	case ts.Status != "completed" && ts.Status != "failed":
		add("task %s (%s): not final: %s (attempts %d, claimed by %q)", tk.id, tk.kind, ts.Status, ts.Attempts, ts.ClaimedBy)
	case tk.huge:
		if ts.Status != "failed" || !strings.Contains(ts.Error, "could not start a Temporal workflow") {
			add("task %s (too large to start): want failed with a start error, got %s %q", tk.id, ts.Status, short(ts.Error))
		}
	case tk.kind == kindFail:
		if ts.Status != "failed" || (ts.Error != failMessage(tk.params.N) && !allowedFailure(ts.Error)) {
			add("task %s (%s): want failed with %q, got %s %q", tk.id, tk.kind, failMessage(tk.params.N), ts.Status, short(ts.Error))
		}
	case tk.kind == kindStepsFail:
		if ts.Status != "failed" || (ts.Error != "step bad (sim.fail): "+failMessage(tk.params.N) && !allowedFailure(ts.Error)) {
			add("task %s (%s): want failed with step bad's %q, got %s %q", tk.id, tk.kind, failMessage(tk.params.N), ts.Status, short(ts.Error))
		}
	case tk.kind == kindBig:
		if ts.Status != "failed" || (!strings.Contains(ts.Error, "more than the 65535 it can store") && !allowedFailure(ts.Error)) {
			add("task %s (%s): want failed as too large to store, got %s %q", tk.id, tk.kind, ts.Status, short(ts.Error))
		}
	default: // ok, fast, flaky, slow, steps, local steps
		switch {
		case ts.Status == "completed":
			expected := expectedResult(tk.params.N)
			if tk.kind == kindSteps || tk.kind == kindStepsLocal {
				expected = stepsResult(tk.params.N)
			}
			var got, want any
			_ = json.Unmarshal(ts.Result, &got)
			_ = json.Unmarshal([]byte(expected), &want)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				add("task %s (%s): completed with result %s, want %s", tk.id, tk.kind, short(string(ts.Result)), expected)
			}
		case !allowedFailure(ts.Error):
			add("task %s (%s): want completed, got failed %q", tk.id, tk.kind, short(ts.Error))
		}
	}
}

func short(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func fmtCounts(m map[string]int) string {
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// The checker's own rule, without a simulation: seed 1 once failed
// because a cancelled run's message reached TaskManager in its short form.
func TestNoHandlerFailure(t *testing.T) {
	short := "sim.big failed; TaskManager refused its error message as too large"
	for _, c := range []struct {
		msg       string
		cancelled bool
		want      bool
	}{
		{"sim.big was cancelled", false, true},
		{short, true, true},
		{short, false, false}, // no cancel: a handler's failure, cut short
		{"result of sim.big is 70011 bytes as TaskManager stores it, more than the 65535 it can store", true, false},
	} {
		if got := noHandlerFailure(c.msg, c.cancelled); got != c.want {
			t.Errorf("noHandlerFailure(%q, cancelled=%v) = %v, want %v", c.msg, c.cancelled, got, c.want)
		}
	}
}

// claimOvers counts, from the bridges' logs, the handlers not run (a
// retried attempt, a local rerun, a local step in a replay, a local
// handler whose run left the worker) because a read showed their claim
// over.
func claimOvers(dir string) int {
	n := 0
	files, _ := filepath.Glob(filepath.Join(dir, "bridge-*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		n += bytes.Count(data, []byte(`"msg":"handler not run: its claim is over"`))
	}
	return n
}
