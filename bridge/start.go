package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prismq/tmbridge/bridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// Search attribute keys, set where the namespace has them.
var (
	taskTypeKey = temporal.NewSearchAttributeKeyKeyword(SearchAttrTaskType)
	taskIDKey   = temporal.NewSearchAttributeKeyKeyword(SearchAttrTaskID)
)

// startTask starts the workflow of a claimed task in the background: it
// retries until the workflow starts (the claim is never dropped), then
// watches the run and gives the task's in-flight slot back when it closes.
func (b *Bridge) startTask(task taskmanager.Task, t servedType) {
	b.starts.Add(1)
	go func() {
		defer b.starts.Done()
		run, err := b.startWorkflow(task, t)
		<-b.pending // this claim is started (or given up): the next may go
		if err != nil {
			b.slots.release()
			b.log.Error("task claimed but its workflow could not be started before shutdown; TaskManager hands it out again after its claim timeout",
				"task_id", string(task.ID), "task_type", t.Name, "err", err)
			return
		}
		go b.watch(run)
	}()
}

// WorkflowID returns the workflow id of a task.
func (b *Bridge) WorkflowID(taskID taskmanager.ID) string {
	return b.cfg.Temporal.WorkflowIDPrefix + string(taskID)
}

// startWorkflow starts the task's workflow (a re-queued task gets a new run
// under the same id) or, when a run is still open (the task was claimed
// again), signals the new claim to it: a task never runs twice at once.
func (b *Bridge) startWorkflow(task taskmanager.Task, t servedType) (client.WorkflowRun, error) {
	id := b.WorkflowID(task.ID)
	claim := workflows.Claim{WorkerID: b.cfg.WorkerID, Attempts: int(task.Attempts)}
	in := workflows.TaskInput{
		Task: workflows.Task{
			ID: string(task.ID), Type: task.Type, Params: task.Params.Raw(),
			Attempts: int(task.Attempts), Priority: int(task.Priority),
		},
		Claim:   claim,
		Options: t.Options,
	}
	opts := client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                b.cfg.Temporal.TaskQueue,
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		Memo: map[string]any{
			"task_id": string(task.ID), "task_type": task.Type, "attempt": int(task.Attempts), "worker_id": b.cfg.WorkerID,
		},
		StaticSummary: fmt.Sprintf("%s · task %s · attempt %d", task.Type, task.ID, task.Attempts),
	}
	if b.searchAttrs {
		opts.TypedSearchAttributes = temporal.NewSearchAttributes(taskTypeKey.ValueSet(task.Type), taskIDKey.ValueSet(string(task.ID)))
	}
	for failures := 0; ; failures++ {
		ctx, cancel := context.WithTimeout(b.bg, 10*time.Second)
		run, err := b.startOrSignal(ctx, id, claim, opts, in)
		cancel()
		if err == nil {
			b.metrics.started.WithLabelValues(task.Type).Inc()
			b.log.Debug("workflow started or signalled", "workflow_id", id, "run_id", run.GetRunID())
			return run, nil
		}
		if b.bg.Err() != nil {
			return nil, err
		}
		if unreachable(err) && b.gate.shut() {
			b.log.Warn("Temporal is unreachable: claiming paused until it answers", "err", err)
			go b.probeTemporal()
		}
		wait := backoff(failures + 1)
		b.log.Warn("cannot start workflow; retrying", "workflow_id", id, "err", err, "retry_in", wait.Round(time.Millisecond))
		sleep(b.bg, wait)
	}
}

// startOrSignal starts the workflow, the common case, without a signal
// event; only when a run is open does it signal the claim to that run.
func (b *Bridge) startOrSignal(ctx context.Context, id string, claim workflows.Claim, opts client.StartWorkflowOptions, in workflows.TaskInput) (client.WorkflowRun, error) {
	run, err := b.tc.ExecuteWorkflow(ctx, opts, workflows.TaskWorkflowName, in)
	var running *serviceerror.WorkflowExecutionAlreadyStarted
	if !errors.As(err, &running) {
		return run, err
	}
	if err := b.tc.SignalWorkflow(ctx, id, running.RunId, workflows.ClaimSignalName, claim); err != nil {
		var gone *serviceerror.NotFound
		if errors.As(err, &gone) {
			return nil, fmt.Errorf("run %s closed before the new claim reached it: %w", running.RunId, err) // retried: it starts anew
		}
		return nil, err
	}
	b.log.Info("task claimed again while its workflow runs: new claim signalled", "workflow_id", id, "attempts", claim.Attempts)
	return b.tc.GetWorkflow(ctx, id, running.RunId), nil
}

func unreachable(err error) bool {
	var (
		unavailable *serviceerror.Unavailable
		deadline    *serviceerror.DeadlineExceeded
	)
	if errors.As(err, &unavailable) || errors.As(err, &deadline) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.DeadlineExceeded
}

// probeTemporal reopens claiming once Temporal answers again.
func (b *Bridge) probeTemporal() {
	for failures := 1; b.bg.Err() == nil; failures++ {
		ctx, cancel := context.WithTimeout(b.bg, 5*time.Second)
		_, err := b.tc.CheckHealth(ctx, &client.CheckHealthRequest{})
		cancel()
		if err == nil {
			b.log.Info("Temporal answers again: claiming resumes")
			b.gate.reopen()
			return
		}
		sleep(b.bg, backoff(failures))
	}
}

// watch waits for a run to close and gives its slot back.
func (b *Bridge) watch(run client.WorkflowRun) {
	defer b.slots.release()
	err := run.Get(b.bg, nil)
	if b.bg.Err() != nil {
		return
	}
	result := "completed"
	if err != nil {
		result = "failed"
	}
	b.metrics.finished.WithLabelValues(result).Inc()
}

// recoverInFlight counts this bridge's task workflows still running (from
// before a restart) against max_in_flight, and watches them.
func (b *Bridge) recoverInFlight(ctx context.Context) {
	query := fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running' AND TaskQueue = '%s'", workflows.TaskWorkflowName, b.cfg.Temporal.TaskQueue)
	var token []byte
	found := 0
	for {
		resp, err := b.tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: b.namespace, Query: query, NextPageToken: token})
		if err != nil {
			b.log.Warn("cannot list running task workflows; in-flight count starts at 0", "err", err)
			return
		}
		for _, ex := range resp.Executions {
			var worker string
			if p := ex.GetMemo().GetFields()["worker_id"]; p != nil {
				_ = converter.GetDefaultDataConverter().FromPayload(p, &worker)
			}
			if worker != b.cfg.WorkerID {
				continue
			}
			found++
			b.slots.force()
			go b.watch(b.tc.GetWorkflow(b.bg, ex.GetExecution().GetWorkflowId(), ex.GetExecution().GetRunId()))
		}
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	if found > 0 {
		b.log.Info("tasks of this worker still running from before count against max_in_flight", "running", found)
	}
}
