package bridge

import (
	"context"
	"fmt"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/prismq/tmbridge/workflows"
)

// recoverRuns counts this worker's task workflows still open (from before a
// restart) in admission, and watches them.
func (b *Bridge) recoverRuns(ctx context.Context) {
	query := fmt.Sprintf("WorkflowType = '%s' AND ExecutionStatus = 'Running' AND TaskQueue = '%s'", workflows.TaskWorkflowName, b.cfg.Temporal.TaskQueue)
	var token []byte
	found := 0
	for {
		resp, err := b.runs.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: b.namespace, Query: query, NextPageToken: token})
		if err != nil {
			b.log.Warn("cannot list running task workflows; in-flight count starts without them", "err", err)
			return
		}
		for _, ex := range resp.Executions {
			claim := workflows.ClaimInMemo(ex.GetMemo())
			if claim.WorkerID != b.cfg.WorkerID {
				continue
			}
			found++
			// The memo's claim is the newest that reached the run, as far as
			// visibility knows: a newer one the sweep finds is signalled.
			if id := ex.GetExecution().GetWorkflowId(); b.adm.adoptRun(id, claim.Attempts) {
				b.watchRun(id)
			}
		}
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	if found > 0 {
		b.log.Info("tasks of this worker still running from before count against max_in_flight", "running", found)
	}
}
