// Package workflows holds tmbridge's task workflow: one run per claimed
// TaskManager task. It runs the task's handler as an activity (or a local
// activity, a child workflow, or a sequence of steps), then reports the
// outcome to TaskManager with the completion activity, retrying until
// TaskManager has it, and follows the task's claim when it moves.
package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
)

// Names that Temporal history depends on: never rename them.
const (
	// TaskWorkflowName is the registered name of TaskWorkflow.
	TaskWorkflowName = "tmbridge.Task"
	// ClaimSignalName carries a new Claim of the task to its running workflow.
	ClaimSignalName = "tmbridge.claim"
	// ClaimQueryName returns the Claim the workflow reports with now.
	ClaimQueryName = "tmbridge.claim"
)

// MaxTextBytes is what TaskManager stores in its result and error columns
// (MySQL TEXT). A longer result fails the task; a longer error is cut.
const MaxTextBytes = 65535

// Task is the claimed task, as TaskManager handed it out.
type Task struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Params   json.RawMessage `json:"params"`
	Attempts int             `json:"attempts"`
	Priority int             `json:"priority"`
}

// Claim is who holds the task in TaskManager: the worker id to report with
// and the attempt count the claim set.
type Claim struct {
	WorkerID string `json:"worker_id"`
	Attempts int    `json:"attempts"`
}

// TaskInput is TaskWorkflow's input. It never holds a secret.
type TaskInput struct {
	Task    Task        `json:"task"`
	Claim   Claim       `json:"claim"`
	Options TypeOptions `json:"options"`
}

// TaskResult is what TaskWorkflow reported to TaskManager.
type TaskResult struct {
	// Status is the task's status after the report: completed, failed or
	// "pending (retry)".
	Status  string          `json:"status"`
	Success bool            `json:"success"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   string          `json:"error,omitempty"`
	// WorkerID is the claim the outcome was reported with.
	WorkerID string `json:"worker_id"`
}

// TaskFailedErrorType is the error type of a workflow whose task failed
// (and was reported as failed): Temporal Web shows such runs as Failed.
const TaskFailedErrorType = "TaskFailed"

// TaskWorkflow runs one claimed task and reports its outcome. It completes
// when the task succeeded and TaskManager has the result; it fails with
// TaskFailedErrorType when the task failed and TaskManager has the error,
// and with the report's error when the outcome could not be reported
// (ClaimLost, NotClaimed, …).
func TaskWorkflow(ctx workflow.Context, in TaskInput) (TaskResult, error) {
	log := workflow.GetLogger(ctx)
	opts := in.Options.WithDefaults()
	claims := followClaims(ctx, in.Claim)

	result, herr := runTask(ctx, in, opts, claims)

	// A cancelled workflow still reports, so the task is not left claimed.
	reportCtx := ctx
	if ctx.Err() != nil {
		reportCtx, _ = workflow.NewDisconnectedContext(ctx)
	}
	out := buildOutcome(in.Task, result, herr)
	rep, err := report(reportCtx, in, opts, claims, out)
	if err != nil {
		log.Error("outcome not reported", "task_id", in.Task.ID, "error", err)
		return TaskResult{}, err
	}
	res := TaskResult{Status: rep.Status, Success: out.Success, Result: out.Result, Error: out.Error, WorkerID: claims.current.WorkerID}
	if !out.Success {
		return res, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("task %s failed (TaskManager: %s): %s", in.Task.ID, rep.Status, out.Error), TaskFailedErrorType, nil, res)
	}
	return res, nil
}

// claimState follows the task's claim as signals move it.
type claimState struct {
	current Claim
	version int // bumped on every change
}

func followClaims(ctx workflow.Context, initial Claim) *claimState {
	st := &claimState{current: initial}
	_ = workflow.SetQueryHandler(ctx, ClaimQueryName, func() (Claim, error) { return st.current, nil })
	ch := workflow.GetSignalChannel(ctx, ClaimSignalName)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			var c Claim
			if !ch.Receive(ctx, &c) {
				return
			}
			if c != st.current && c.WorkerID != "" {
				workflow.GetLogger(ctx).Info("claim moved", "from", st.current.WorkerID, "to", c.WorkerID, "attempts", c.Attempts)
				st.current = c
				st.version++
			}
		}
	})
	return st
}

// runTask runs the task's handler, child workflow or steps.
func runTask(ctx workflow.Context, in TaskInput, opts TypeOptions, claims *claimState) (json.RawMessage, error) {
	input := activities.HandlerInput{
		TaskID: in.Task.ID, TaskType: in.Task.Type, Params: in.Task.Params,
		Attempt: claims.current.Attempts, WorkerID: claims.current.WorkerID,
	}
	var out json.RawMessage
	switch {
	case len(opts.Steps) > 0:
		return runSteps(ctx, in, opts, claims)
	case opts.Workflow != "":
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
			WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID + "/" + opts.Workflow,
			TaskQueue:  opts.TaskQueue,
		})
		err := workflow.ExecuteChildWorkflow(cctx, opts.Workflow, input).Get(ctx, &out)
		return out, err
	default:
		name := opts.Handler
		if name == "" {
			name = in.Task.Type
		}
		err := opts.execute(ctx, name, input).Get(ctx, &out)
		return out, err
	}
}

// outcome is what will be reported.
type outcome struct {
	Success bool
	Result  json.RawMessage
	Error   string
}

// buildOutcome turns the handler's result or error into what TaskManager
// can store: a result over MaxTextBytes fails the task, an error message
// over MaxTextBytes is cut.
func buildOutcome(task Task, result json.RawMessage, err error) outcome {
	if err != nil {
		return outcome{Error: truncate(failureMessage(task.Type, err), MaxTextBytes)}
	}
	if len(result) == 0 {
		result = json.RawMessage(`{}`)
	}
	if len(result) > MaxTextBytes {
		return outcome{Error: fmt.Sprintf("result of %s is %d bytes, more than the %d TaskManager can store", task.Type, len(result), MaxTextBytes)}
	}
	return outcome{Success: true, Result: result}
}

// failureMessage says why a handler failed, without Temporal's wrapping.
func failureMessage(taskType string, err error) string {
	var (
		appErr     *temporal.ApplicationError
		timeoutErr *temporal.TimeoutError
		cancelErr  *temporal.CanceledError
		panicErr   *temporal.PanicError
	)
	switch {
	case errors.As(err, &timeoutErr):
		return fmt.Sprintf("%s timed out (%s)", taskType, timeoutErr.TimeoutType())
	case errors.As(err, &cancelErr):
		return fmt.Sprintf("%s was cancelled", taskType)
	case errors.As(err, &panicErr):
		return fmt.Sprintf("%s panicked: %s", taskType, panicErr.Error())
	case errors.As(err, &appErr):
		return appErr.Message()
	default:
		return err.Error()
	}
}

func truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	const mark = "… (truncated)"
	cut := limit - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// Completion activity options: each attempt bounded, retried without limit
// (a TaskManager outage of hours loses nothing).
func reportOptions() workflow.ActivityOptions {
	return workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute,
			MaximumAttempts: 0,
		},
	}
}

// localReportOptions: in local mode the report first runs locally, for a
// minute at most, then falls back to the regular activity.
func localReportOptions() workflow.LocalActivityOptions {
	return workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second, ScheduleToCloseTimeout: time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 10 * time.Second},
	}
}

// report sends the outcome with the current claim. After a 403 it waits up
// to ClaimWait for a new claim and tries again with it; a result refused
// as too large (413) is reported as a failure instead.
func report(ctx workflow.Context, in TaskInput, opts TypeOptions, claims *claimState, out outcome) (activities.ReportOutput, error) {
	var rep activities.ReportOutput
	for {
		version := claims.current
		seen := claims.version
		ri := activities.ReportInput{
			TaskID: in.Task.ID, WorkerID: version.WorkerID, Attempt: version.Attempts,
			Success: out.Success, Result: out.Result, Error: out.Error,
		}
		err := runReport(ctx, opts, ri, &rep)
		switch {
		case err == nil:
			return rep, nil
		case isErrorType(err, activities.ErrTypePayloadTooLarge) && out.Success:
			out = outcome{Error: fmt.Sprintf("TaskManager refused the %d-byte result of %s as too large (413)", len(out.Result), in.Task.Type)}
		case isErrorType(err, activities.ErrTypePayloadTooLarge) && len(out.Error) > 1024:
			out.Error = truncate(out.Error, 1024)
		case isErrorType(err, activities.ErrTypeClaimLost):
			if claims.version != seen {
				continue // a new claim arrived while we were reporting
			}
			moved, _ := workflow.AwaitWithTimeout(ctx, opts.ClaimWait, func() bool { return claims.version != seen })
			if !moved {
				return rep, temporal.NewNonRetryableApplicationError(
					fmt.Sprintf("claim lost: task %s is claimed by another worker than %s, and no new claim reached this workflow within %s",
						in.Task.ID, version.WorkerID, opts.ClaimWait), activities.ErrTypeClaimLost, err)
			}
		default:
			return rep, err
		}
	}
}

func runReport(ctx workflow.Context, opts TypeOptions, in activities.ReportInput, rep *activities.ReportOutput) error {
	if opts.Local {
		lctx := workflow.WithLocalActivityOptions(ctx, localReportOptions())
		err := workflow.ExecuteLocalActivity(lctx, activities.ReportActivityName, in).Get(ctx, rep)
		if err == nil || isNonRetryable(err) {
			return err
		}
		// Still failing after a minute: hand over to the durable regular activity.
	}
	actx := workflow.WithActivityOptions(ctx, reportOptions())
	return workflow.ExecuteActivity(actx, activities.ReportActivityName, in).Get(ctx, rep)
}

func isErrorType(err error, typ string) bool {
	var appErr *temporal.ApplicationError
	return errors.As(err, &appErr) && appErr.Type() == typ
}

func isNonRetryable(err error) bool {
	var appErr *temporal.ApplicationError
	return errors.As(err, &appErr) && appErr.NonRetryable()
}
