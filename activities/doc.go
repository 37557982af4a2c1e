// Package activities holds the handlers that run TaskManager tasks and the
// Temporal activities around them.
//
// A handler author needs: NewRegistry, Register (or Registry.Add with
// Typed, Exec, HTTP), Permanent, Transient and InvalidParams (errors that
// decide retries), ReportProgress, and TaskInfo (the HandlerInput a
// handler runs for):
//
//	reg := activities.NewRegistry()
//	activities.Register(reg, "image.resize", func(ctx context.Context, p ResizeParams) (ResizeResult, error) {
//		activities.ReportProgress(ctx, 50, "resizing")
//		return resize(ctx, p)
//	})
//
// The worker side is Activities (RegisterOn, ReportOutcome, CancelHandlers,
// Idle) and Report: the bridge uses them; a handler author does not.
//
// # The report rule: read, then post only for the claim that holds the task
//
// An outcome is posted (POST /tasks/{id}/complete) only while TaskManager
// shows the task claimed by the very claim the outcome is for: the same
// worker id and the same attempt count. TaskManager itself checks only the
// worker id, so whenever an earlier post may have landed — a retried
// attempt of the activity, a local activity (a crash re-runs it from
// scratch), a report the workflow hands over from a local to a regular
// activity — or the claim may have timed out and been handed out again,
// perhaps to this same worker id (it is older than half the claim timeout,
// or of unknown age), the task is read first, and:
//
//   - still claimed by this claim: post;
//   - holding this outcome (completed with this result, or failed or
//     re-queued with this error): already recorded, nothing is posted;
//   - claimed by another claim (another worker, or this worker at another
//     attempt count), or pending with another outcome: ClaimLost, so the
//     workflow waits for that claim to reach it and reports with it;
//   - anything else (completed or failed with another outcome, gone):
//     NotClaimed or TaskNotFound, and nothing is posted.
//
// A first post that meets "not in claimed state" reads the task back the
// same way. Errors that may pass (5xx, network, 429, 401, answers that are
// not TaskManager's own) are retryable, so Temporal retries until
// TaskManager has the outcome; the rest carry a stable error type.
package activities
