package activities

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/taskmanager"
)

// ReportInput is a task's outcome, as the completion activity sends it.
type ReportInput struct {
	TaskID   string          `json:"task_id"`
	WorkerID string          `json:"worker_id"` // the claim that holds the task now
	Attempt  int             `json:"attempt"`   // TaskManager's attempt count of that claim
	Success  bool            `json:"success"`
	Result   json.RawMessage `json:"result,omitempty"` // on success: a JSON object
	Error    string          `json:"error,omitempty"`  // on failure
	// Progress, when set with a success, is posted just before the outcome:
	// the task's last progress, that no step posted (a multi-step task).
	Progress *Progress `json:"progress,omitempty"`
	// ReadFirst: the task is read before anything is posted, because an
	// earlier report of this outcome may have reached TaskManager, or the
	// claim is old enough to have timed out and been handed out again
	// (TaskManager would take a post with the same worker id for the new
	// claim).
	ReadFirst bool `json:"read_first,omitempty"`
	// ReadFirstFrom: the report reads first when it runs at or after this
	// time (half the claim timeout after the claim was made), for the claim
	// may have timed out while the report waited to run.
	ReadFirstFrom time.Time `json:"read_first_from,omitzero"`
	// Short: Error is the bridge's own short message, sent once TaskManager
	// refused the handler's. TaskManager refusing this one too (too large,
	// invalid) says nothing of it (a fault, not its size): that is retried,
	// so that the outcome lands and the claim does not stay held.
	Short bool `json:"short,omitempty"`
}

// ReportOutput says what TaskManager recorded.
type ReportOutput struct {
	// Status is the task's new status: completed, failed or "pending (retry)".
	Status string `json:"status"`
	// AlreadyRecorded: an earlier post of this outcome had landed and its
	// answer was lost; the task was read and holds our outcome.
	AlreadyRecorded bool `json:"already_recorded,omitempty"`
	// ReadStatus and ReadAttempts are the task's status and attempt count
	// as read when the task holds our outcome: found already recorded, or
	// read after a post of an old claim.
	ReadStatus   string `json:"read_status,omitempty"`
	ReadAttempts int    `json:"read_attempts,omitempty"`
	// ReadBackFailed: the outcome was posted after a read (the claim was
	// old, or a post uncertain) and the read after the post failed, so
	// which claim the post ended is not known: the workflow reads the
	// task itself before it runs a handler for a newer claim.
	ReadBackFailed bool `json:"read_back_failed,omitempty"`
}

// ReportOutcome is the completion activity. It follows the report rule
// (see the package doc); a retried attempt and a local activity always
// read first.
func (a *Activities) ReportOutcome(ctx context.Context, in ReportInput) (ReportOutput, error) {
	info := activity.GetInfo(ctx)
	in.ReadFirst = in.ReadFirst || info.Attempt > 1 || info.IsLocalActivity ||
		(!in.ReadFirstFrom.IsZero() && !time.Now().Before(in.ReadFirstFrom))
	key := markKey(in.TaskID, in.Attempt)
	// The claim's progress post being sent goes first, and a handler's 100
	// still waiting, so that none lands after the outcome (another one
	// still waiting is dropped: the outcome supersedes it).
	fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	a.posts.flush(fctx, key)
	cancel()
	a.marks.forget(key)
	out, err := Report(ctx, a.TaskManager, in)
	if in.Short && (HasErrorType(err, ErrTypePayloadTooLarge) || HasErrorType(err, ErrTypeRejected)) {
		err = Transient(fmt.Errorf("TaskManager refused even the short error message, retrying: %w", err), 0)
	}
	if errors.Is(err, taskmanager.ErrUnauthorized) {
		a.logger().Error("TaskManager refuses the API key; outcome kept and retried until it is fixed", "task_id", in.TaskID)
	}
	if a.Reported != nil {
		a.Reported(info.WorkflowExecution.ID, in.Attempt, err)
	}
	if err == nil {
		a.logger().Info("✓ reported outcome", "task_id", in.TaskID, "attempts", in.Attempt, "success", in.Success,
			"status", cmp.Or(out.Status, out.ReadStatus), "already_recorded", out.AlreadyRecorded)
	}
	return out, err
}

// Report applies the report rule with tm; ReportOutcome runs it as an
// activity, and the bridge uses it to fail a task it cannot start. Its
// errors are Temporal application errors whose type says what happened
// (ErrTypeClaimLost, ErrTypeNotClaimed, ErrTypeTaskNotFound,
// ErrTypePayloadTooLarge, ErrTypeRejected) or retryable ones.
func Report(ctx context.Context, tm *taskmanager.Client, in ReportInput) (ReportOutput, error) {
	return report(ctx, tm, in, true)
}

// ReportUnread posts in's outcome without ever reading the task: the
// bridge uses it to fail a task whose answers it cannot decode. A post
// TaskManager refuses as not claimed (or claimed by another) is final,
// ErrTypeNotClaimed: the claim is over, or an earlier post of this
// outcome landed, and the task cannot be read to tell which. A post whose
// answer was lost is ErrTypeUncertain, not to be posted again: it may
// have landed, and the task been claimed again by the same worker id,
// whose newer claim a second post would end. in.ReadFirst is ignored.
func ReportUnread(ctx context.Context, tm *taskmanager.Client, in ReportInput) (ReportOutput, error) {
	return report(ctx, tm, in, false)
}

// report applies the report rule; canRead false: no read, before the
// post or after it.
func report(ctx context.Context, tm *taskmanager.Client, in ReportInput, canRead bool) (ReportOutput, error) {
	id := taskmanager.ID(in.TaskID)
	if canRead && in.ReadFirst {
		task, err := tm.GetTask(ctx, id)
		if err != nil {
			return ReportOutput{}, readError(err, "read task before posting its outcome")
		}
		if out, err, done := judge(task, in, nil); done {
			return out, err
		}
	}
	if in.Success && in.Progress != nil {
		// Best effort, as all progress: the outcome matters, not this.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = tm.Progress(pctx, id, in.WorkerID, min(max(in.Progress.Percent, 0), 100), in.Progress.Message)
		cancel()
	}
	comp := taskmanager.Completion{WorkerID: in.WorkerID, Success: in.Success}
	if in.Success {
		comp.Result = in.Result
	} else {
		comp.Error = in.Error
	}
	status, err := tm.Complete(ctx, id, comp)
	switch {
	case err == nil && canRead && in.ReadFirst:
		// The claim was old or its post uncertain: TaskManager may have
		// handed the task out again to this same worker id just before the
		// post, which then ended that newer claim. Say which attempt the
		// outcome landed on, so the workflow runs no handler for a claim
		// that is over.
		//
		// A read that fails (or finds the task deleted) says so
		// (ReadBackFailed): the workflow reads before it runs a handler
		// for a newer claim. An error here would have the report retried,
		// judging a task that may have moved on since.
		t, rerr := tm.GetTask(ctx, id)
		if rerr != nil {
			return ReportOutput{Status: status, ReadBackFailed: true}, nil
		}
		return ReportOutput{Status: status, ReadStatus: t.Status, ReadAttempts: int(t.Attempts)}, nil
	case err == nil:
		return ReportOutput{Status: status}, nil
	case !canRead && (errors.Is(err, taskmanager.ErrNotClaimed) || errors.Is(err, taskmanager.ErrClaimedByOther)):
		msg := fmt.Sprintf("task %s refused the outcome: its claim is over, or an earlier post of it landed (the task cannot be read to tell which)", in.TaskID)
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeNotClaimed, err)
	case errors.Is(err, taskmanager.ErrNotClaimed), errors.Is(err, taskmanager.ErrClaimedByOther):
		// Read back: an earlier post may have landed, or the claim moved.
		task, rerr := tm.GetTask(ctx, id)
		if rerr != nil {
			return ReportOutput{}, readError(rerr, fmt.Sprintf("read task back after %q", err.Error()))
		}
		out, jerr, done := judge(task, in, err)
		if !done { // TaskManager says no, yet the task looks like ours: try again
			return ReportOutput{}, Transient(fmt.Errorf("task %s refused the outcome but reads as claimed by this claim: %w", in.TaskID, err), 0)
		}
		return out, jerr
	case errors.Is(err, taskmanager.ErrNotFound):
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeTaskNotFound, err)
	case errors.Is(err, taskmanager.ErrPayloadTooLarge):
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypePayloadTooLarge, err)
	case errors.Is(err, taskmanager.ErrValidation):
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeRejected, err)
	case !canRead && (ambiguous(err) || unreadable2xx(err)):
		msg := fmt.Sprintf("task %s: the answer to the outcome's post was lost, and the task cannot be read to tell whether it landed", in.TaskID)
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeUncertain, err)
	case ambiguous(err):
		// The post may still be under way on the server (a slow database
		// behind a proxy that gave up): the next attempt reads the task,
		// and waits until such a write has landed or died.
		return ReportOutput{}, Transient(err, max(taskmanager.RetryAfter(err), tm.Timeout()))
	default:
		return ReportOutput{}, Transient(err, taskmanager.RetryAfter(err))
	}
}

// ambiguous reports whether a failed write may still land: no answer came
// (a timeout, a broken connection) or a proxy gave up waiting (502, 504).
func ambiguous(err error) bool {
	var e *taskmanager.Error
	if !errors.As(err, &e) || !errors.Is(err, taskmanager.ErrTransient) {
		return false
	}
	return e.Status == 0 || e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout
}

// unreadable2xx reports whether a write was answered 2xx with a body that
// does not read (PHP printing a warning before its JSON): it landed, or a
// proxy answered for it; nothing of it is still under way.
func unreadable2xx(err error) bool {
	var e *taskmanager.Error
	return errors.As(err, &e) && e.Status >= 200 && e.Status <= 299
}

// judge decides from the task as read whether to post (done false), or
// what the report's answer is. cause is the refused post, if any.
func judge(t taskmanager.Task, in ReportInput, cause error) (ReportOutput, error, bool) {
	heldByUs := t.HeldBy(in.WorkerID, in.Attempt)
	switch {
	case holdsOutcome(t, in):
		status := t.Status
		if !in.Success && status != taskmanager.StatusFailed {
			status = "pending (retry)"
		}
		return ReportOutput{Status: status, AlreadyRecorded: true, ReadStatus: t.Status, ReadAttempts: int(t.Attempts)}, nil, true
	case heldByUs:
		return ReportOutput{}, nil, false
	case t.Status == taskmanager.StatusClaimed || t.Status == taskmanager.StatusPending:
		msg := fmt.Sprintf("task %s is %s (claimed by %q, attempt %d), no longer by this claim (%q, attempt %d)",
			in.TaskID, t.Status, t.ClaimedBy, int(t.Attempts), in.WorkerID, in.Attempt)
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeClaimLost, cause), true
	default:
		msg := fmt.Sprintf("task %s is %s and does not hold this outcome", in.TaskID, t.Status)
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeNotClaimed, cause), true
	}
}

// readError classifies a failed read of the task.
func readError(err error, what string) error {
	if errors.Is(err, taskmanager.ErrNotFound) {
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeTaskNotFound, err)
	}
	// Anything else may pass, an undecodable answer included: retry.
	return Transient(fmt.Errorf("%s: %w", what, err), taskmanager.RetryAfter(err))
}

// holdsOutcome reports whether the task as read holds the outcome we send.
// A failure read back from a task claimed again since is taken as ours
// when its message is ours, though an earlier attempt that failed the same
// way leaves the same message (a claim does not clear it), and our claim
// may have timed out instead: the read cannot tell the two apart. Taking
// it as ours only mislabels a lost claim as recorded; taking a landed
// failure as a lost claim would report it again with the newer claim.
func holdsOutcome(t taskmanager.Task, in ReportInput) bool {
	if in.Success {
		return t.Status == taskmanager.StatusCompleted && taskmanager.SameResult(t.Result.Raw(), in.Result)
	}
	if t.Error != in.Error {
		return false
	}
	// A failure leaves the task failed, or re-queued (and maybe claimed
	// again since, which raised its attempt count).
	return t.Status == taskmanager.StatusFailed || t.Status == taskmanager.StatusPending ||
		(t.Status == taskmanager.StatusClaimed && int(t.Attempts) > in.Attempt)
}
