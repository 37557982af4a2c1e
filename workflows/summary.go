package workflows

import "fmt"

// Summaries are what Temporal Web and the CLI show beside each activity,
// timer and child of a run, so that its timeline reads like the config:
// one short line naming the step and what it runs. They are user metadata,
// not commands: replay ignores them, so they may change freely. They name
// steps, handlers and task ids, never params (which may hold secrets).

// taskSummary is the summary of a task's own handler or child workflow.
func taskSummary(task Task, runs string) string {
	return fmt.Sprintf("task %s · %s", task.ID, runs)
}

// stepSummary is the summary of what step name runs.
func stepSummary(name, runs string) string {
	return fmt.Sprintf("step %s · %s", name, runs)
}

// reportSummary is the summary of the completion activity.
func reportSummary(success bool) string {
	if success {
		return "report completed"
	}
	return "report failed"
}
