package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/taskmanager"
)

// Registered names of the activities of an `enqueue` step (ReadTask also
// reads a run's own task). History depends on them: never rename them.
const (
	EnqueueActivityName   = "tmbridge.EnqueueTask"
	ReadTaskActivityName  = "tmbridge.ReadTask"
	AwaitTaskActivityName = "tmbridge.AwaitTask"
)

// EnqueueInput is a task to create in TaskManager.
type EnqueueInput struct {
	Type   string          `json:"type"`
	Params json.RawMessage `json:"params"`
}

// EnqueueOutput names the task created (or found: TaskManager returns the
// existing task for the same type and params).
type EnqueueOutput struct {
	TaskID       string `json:"task_id"`
	Deduplicated bool   `json:"deduplicated,omitempty"`
}

// EnqueueTask is the activity that creates an enqueue step's task. A
// retry after a lost answer finds the same task (TaskManager deduplicates
// on type and params), so the task is created once. A task TaskManager
// refuses (bad params, unknown type) fails for good.
func (a *Activities) EnqueueTask(ctx context.Context, in EnqueueInput) (EnqueueOutput, error) {
	created, err := a.TaskManager.CreateTask(ctx, in.Type, in.Params)
	if err != nil {
		err = fmt.Errorf("create %s task: %w", in.Type, err)
		if !taskmanager.Retryable(err) {
			return EnqueueOutput{}, Permanent(err)
		}
		return EnqueueOutput{}, Transient(err, taskmanager.RetryAfter(err))
	}
	return EnqueueOutput{TaskID: string(created.ID), Deduplicated: created.Deduplicated}, nil
}

// TaskState is where a TaskManager task is: its status and outcome.
type TaskState struct {
	Status   string          `json:"status"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	Attempts int             `json:"attempts"`
}

// ReadTask is the activity that reads a task: an enqueued one, or the
// run's own, to see whether its claim still holds it.
func (a *Activities) ReadTask(ctx context.Context, taskID string) (TaskState, error) {
	t, err := a.TaskManager.GetTask(ctx, taskmanager.ID(taskID))
	if errors.Is(err, taskmanager.ErrNotFound) {
		return TaskState{}, Permanent(fmt.Errorf("task %s is not found in TaskManager (deleted?)", taskID))
	}
	if err != nil {
		return TaskState{}, Transient(fmt.Errorf("read task %s: %w", taskID, err), taskmanager.RetryAfter(err))
	}
	return TaskState{Status: t.Status, Result: t.Result.Raw(), Error: t.Error, Attempts: int(t.Attempts)}, nil
}

// AwaitTask is the activity that waits for an enqueued task to end. It
// reads the task once: ended (completed or failed), it returns its state;
// not yet, it fails with ErrTypeNotDone (a benign failure), and the step's
// retry policy reads it again later (its poll interval, doubling up to
// its max). Temporal records an activity's retries in no history event,
// so a wait of days costs the run a handful of events.
func (a *Activities) AwaitTask(ctx context.Context, taskID string) (TaskState, error) {
	st, err := a.ReadTask(ctx, taskID)
	if err != nil {
		return TaskState{}, err // gone (for good), or TaskManager unreachable (read again)
	}
	if st.Status == taskmanager.StatusCompleted || st.Status == taskmanager.StatusFailed {
		return st, nil
	}
	return TaskState{}, temporal.NewApplicationErrorWithOptions(fmt.Sprintf("task %s is %s", taskID, st.Status), ErrTypeNotDone,
		temporal.ApplicationErrorOptions{Category: temporal.ApplicationErrorCategoryBenign})
}
