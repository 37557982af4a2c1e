package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/bridge/taskmanager"
)

// ReportInput is a task's outcome, as the completion activity sends it.
type ReportInput struct {
	TaskID   string          `json:"task_id"`
	WorkerID string          `json:"worker_id"` // the claim that holds the task now
	Attempt  int             `json:"attempt"`   // TaskManager's attempt count of that claim
	Success  bool            `json:"success"`
	Result   json.RawMessage `json:"result,omitempty"` // on success: a JSON object
	Error    string          `json:"error,omitempty"`  // on failure
}

// ReportOutput says what TaskManager recorded.
type ReportOutput struct {
	// Status is the task's new status: completed, failed or "pending (retry)".
	Status string `json:"status"`
	// AlreadyRecorded: an earlier attempt of this activity had landed and
	// its answer was lost; the task was read back and holds our outcome.
	AlreadyRecorded bool `json:"already_recorded,omitempty"`
}

// ReportOutcome is the completion activity: POST /tasks/{id}/complete. It
// is idempotent: when a retry meets "not in claimed state" because an
// earlier attempt did land, it reads the task back and succeeds if the
// recorded outcome is ours. Errors that may pass (5xx, network, 429, 401)
// are returned as retryable, so Temporal retries until TaskManager has the
// outcome; the rest are non-retryable with a stable type (ClaimLost,
// NotClaimed, TaskNotFound, PayloadTooLarge, Rejected).
func (a *Activities) ReportOutcome(ctx context.Context, in ReportInput) (ReportOutput, error) {
	id := taskmanager.ID(in.TaskID)
	comp := taskmanager.Completion{WorkerID: in.WorkerID, Success: in.Success}
	if in.Success {
		comp.Result = in.Result
	} else {
		comp.Error = in.Error
	}
	status, err := a.TaskManager.Complete(ctx, id, comp)
	switch {
	case err == nil:
		return ReportOutput{Status: status}, nil
	case errors.Is(err, taskmanager.ErrNotClaimed):
		return a.checkRecorded(ctx, in, err)
	case errors.Is(err, taskmanager.ErrClaimedByOther):
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeClaimLost, err)
	case errors.Is(err, taskmanager.ErrNotFound):
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeTaskNotFound, err)
	case errors.Is(err, taskmanager.ErrPayloadTooLarge):
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypePayloadTooLarge, err)
	case errors.Is(err, taskmanager.ErrValidation):
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeRejected, err)
	default:
		if errors.Is(err, taskmanager.ErrUnauthorized) {
			a.logger().Error("TaskManager refuses the API key; outcome kept and retried until it is fixed", "task_id", in.TaskID)
		}
		return ReportOutput{}, Transient(err, taskmanager.RetryAfter(err))
	}
}

// checkRecorded reads the task back after "not in claimed state" and
// succeeds if TaskManager holds our outcome.
func (a *Activities) checkRecorded(ctx context.Context, in ReportInput, cause error) (ReportOutput, error) {
	task, err := a.TaskManager.GetTask(ctx, taskmanager.ID(in.TaskID))
	if err != nil {
		if taskmanager.Retryable(err) {
			return ReportOutput{}, Transient(fmt.Errorf("read task back after %q: %w", cause.Error(), err), taskmanager.RetryAfter(err))
		}
		return ReportOutput{}, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeTaskNotFound, err)
	}
	if ours(task, in) {
		status := task.Status
		if !in.Success && status != taskmanager.StatusFailed {
			status = "pending (retry)"
		}
		return ReportOutput{Status: status, AlreadyRecorded: true}, nil
	}
	msg := fmt.Sprintf("task %s is %s and does not hold this outcome: %v", in.TaskID, task.Status, cause)
	return ReportOutput{}, temporal.NewNonRetryableApplicationError(msg, ErrTypeNotClaimed, cause)
}

// ours reports whether the task as read back holds the outcome we sent.
func ours(t taskmanager.Task, in ReportInput) bool {
	if in.Success {
		return t.Status == taskmanager.StatusCompleted && jsonEqual(t.Result.Raw(), in.Result)
	}
	if t.Error != in.Error {
		return false
	}
	// A failure leaves the task failed, or re-queued (and maybe claimed again since).
	return t.Status == taskmanager.StatusFailed || t.Status == taskmanager.StatusPending ||
		(t.Status == taskmanager.StatusClaimed && int(t.Attempts) > in.Attempt)
}

func jsonEqual(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
