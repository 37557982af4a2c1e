package workflows

import (
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// ReplayOptions are the options to replay a task run's history with
// (worker.WorkflowReplayer's ReplayWorkflowHistoryWithOptions): the run's
// own workflow id, read from its start event. A Go workflow handler's
// child id derives from it, so a replay under the replayer's default id
// would not match the child's start.
func ReplayOptions(h *historypb.History) worker.ReplayWorkflowHistoryOptions {
	var opts worker.ReplayWorkflowHistoryOptions
	if evs := h.GetEvents(); len(evs) > 0 {
		if id := evs[0].GetWorkflowExecutionStartedEventAttributes().GetWorkflowId(); id != "" {
			opts.OriginalExecution = workflow.Execution{ID: id}
		}
	}
	return opts
}
