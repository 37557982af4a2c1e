package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/time/rate"

	"github.com/prismq/tmbridge/internal/heldrun"
	"github.com/prismq/tmbridge/taskmanager"
)

// ReportActivityName is the completion activity's registered name. History
// depends on it: never rename it.
const ReportActivityName = "tmbridge.ReportOutcome"

// Activities is the worker side: the Temporal activities that wrap the
// registry's handlers, report outcomes and post progress, with what they
// need. The bridge registers one value with RegisterOn; workflows call the
// activities by name.
type Activities struct {
	// Registry holds the task type handlers; each is registered as an
	// activity named after its task type.
	Registry *Registry
	// TaskManager reports outcomes and progress.
	TaskManager *taskmanager.Client
	// CurrentClaim, when set, returns the worker id that holds a task now
	// (queried from its workflow); progress uses it after a 403.
	CurrentClaim func(ctx context.Context, workflowID string) (string, error)
	// Reported, when set, is told of each attempt to report a task's
	// outcome for the claim with attempts (TaskManager's attempt count),
	// with its error: nil when TaskManager has the outcome (the claim is
	// over and the run about to close), else the attempt is retried.
	Reported func(workflowID string, attempts int, err error)
	// ProgressInterval is the least time between two progress calls for one
	// task; more frequent updates only change the heartbeat detail.
	// Default 2s.
	ProgressInterval time.Duration
	// ProgressBudget, when set, bounds the progress calls of all handlers
	// together (a thousand handlers at ProgressInterval would flood
	// TaskManager): an update due when the budget is spent is not posted,
	// and the handler's next update goes when there is budget again. A
	// handler's 100 is posted outside it (the first 100 of each handler attempt), unless the
	// budget's burst is 0: then handlers post no progress at all. Nil: no
	// bound. It does not count the steps-done posts of multi-step tasks
	// (one per step).
	ProgressBudget *rate.Limiter
	// Logger logs what the activities cannot return. Default slog.Default().
	Logger *slog.Logger

	running  atomic.Int64 // handler attempts under way
	handlers runningHandlers
	marks    progressMarks
	posts    postQueue // task progress being posted (postTaskProgress)

	stopOnce sync.Once
	stopCtx  context.Context // done once CancelHandlers was called
	stopNow  context.CancelFunc
}

// CancelHandlers cancels the context of every regular (not local) handler
// attempt running on this worker, and of every one that starts later. The
// bridge calls it when a stop's shutdown grace ends: the SDK gives local
// activities (and a workflow task waiting on one) the worker's stop
// timeout first, and only then regular activities the timeout again, so
// that without it a regular handler could run for two or three times the
// grace. Local handlers are left to the SDK, which drops their results
// once it stops them (their workflow task runs again elsewhere); cancelled
// here, a local handler's retries would fail at once and spend its
// attempts.
func (a *Activities) CancelHandlers() { a.stopping(); a.stopNow() }

// stopping returns a context that ends when CancelHandlers is called.
func (a *Activities) stopping() context.Context {
	a.stopOnce.Do(func() { a.stopCtx, a.stopNow = context.WithCancel(context.Background()) })
	return a.stopCtx
}

// Idle waits until no handler runs on this worker and the progress they
// handed over is posted, or ctx ends. After a
// worker stop cancels its handlers, waiting for them lets the SDK report
// their attempts as failed, so Temporal retries them at once instead of
// after their heartbeat timeout.
func (a *Activities) Idle(ctx context.Context) error {
	for a.running.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return a.posts.idle(ctx)
}

// ActivityRegistrar is the part of a Temporal worker (or test environment)
// that registers activities.
type ActivityRegistrar interface {
	RegisterActivityWithOptions(a any, options activity.RegisterOptions)
}

// RegisterOn registers on a worker every handler of the registry (each as
// an activity named after its task type), the completion activity, the
// progress activity and the activities of enqueue steps.
func (a *Activities) RegisterOn(w ActivityRegistrar) {
	for _, name := range a.Registry.Names() {
		h, _ := a.Registry.Lookup(name)
		w.RegisterActivityWithOptions(a.handlerActivity(name, h), activity.RegisterOptions{Name: name})
	}
	w.RegisterActivityWithOptions(a.ReportOutcome, activity.RegisterOptions{Name: ReportActivityName})
	w.RegisterActivityWithOptions(a.PostProgress, activity.RegisterOptions{Name: ProgressActivityName})
	w.RegisterActivityWithOptions(a.EnqueueTask, activity.RegisterOptions{Name: EnqueueActivityName})
	w.RegisterActivityWithOptions(a.ReadTask, activity.RegisterOptions{Name: ReadTaskActivityName})
	w.RegisterActivityWithOptions(a.AwaitTask, activity.RegisterOptions{Name: AwaitTaskActivityName})
}

func (a *Activities) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.Default()
}

// handlerActivity wraps a Handler as an activity: progress reporting,
// automatic heartbeats, panic recovery and result normalisation.
func (a *Activities) handlerActivity(name string, h Handler) func(context.Context, HandlerInput) (json.RawMessage, error) {
	return func(ctx context.Context, in HandlerInput) (result json.RawMessage, err error) {
		a.running.Add(1)
		defer a.running.Add(-1)
		info := activity.GetInfo(ctx)
		if !info.IsLocalActivity { // see CancelHandlers
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(ctx)
			defer cancel()
			defer context.AfterFunc(a.stopping(), cancel)()
		}
		p := &progress{a: a, taskID: in.TaskID, workerID: in.WorkerID, attempt: in.Attempt, workflowID: info.WorkflowExecution.ID, local: info.IsLocalActivity, step: in.Step != "",
			beating: !info.IsLocalActivity && info.HeartbeatTimeout > 0}
		ctx = context.WithValue(ctx, progressKey{}, p)
		ctx = context.WithValue(ctx, inputKey{}, in)
		if p.beating {
			stop := p.heartbeatEvery(ctx, info.HeartbeatTimeout)
			defer stop()
			defer func() {
				if err != nil && ctx.Err() == nil { // the next attempt, and Temporal Web, see the last progress
					p.mu.Lock()
					last := p.last
					p.mu.Unlock()
					activity.RecordHeartbeat(ctx, last)
				}
			}()
		}
		defer func() {
			if r := recover(); r != nil {
				a.logger().Error("handler panicked", "task_type", name, "task_id", in.TaskID, "panic", r)
				// Made valid UTF-8, as a returned error is (ValidUTF8Error):
				// Temporal refuses a failure that is not, and the attempt
				// would then hang until its timeout, its reason lost.
				result, err = nil, temporal.NewApplicationErrorWithOptions(
					taskmanager.ValidUTF8(fmt.Sprintf("handler %s panicked: %v", name, r)), ErrTypePanic,
					temporal.ApplicationErrorOptions{Details: []any{taskmanager.ValidUTF8(string(debug.Stack()))}})
			}
		}()
		if in.SkipIfDone {
			if out, err, done := a.recordedOutcome(ctx, in); done {
				return out, err
			}
		}
		leave, err := a.handlers.enter(ctx, in, info.WorkflowExecution.RunID, info.ActivityID, a.logger())
		if err != nil {
			return nil, err
		}
		defer leave()
		// Read once enter let it through: it may have waited for an
		// earlier attempt, still running here, while the claim timed out.
		if why := readsFirst(info, in); in.ReadOnRetry && why != "" {
			if err := a.claimOver(ctx, in, why); err != nil {
				return nil, err
			}
		}
		if in.Progress != nil && info.Attempt == 1 {
			p.postTaskProgress(in.Attempt, *in.Progress) // in the background: the handler starts at once
		}
		out, err := h.Handle(ctx, in.Params)
		if !p.step {
			// Its progress posts land before its outcome, which may be
			// reported by another bridge (whose flush sees no queue here).
			waitPosted(ctx, a.posts.pending(markKey(in.TaskID, in.Attempt)))
		}
		if err != nil {
			return nil, ValidUTF8Error(applicationOnTop(err))
		}
		result, err = normalizeResult(out)
		if n := payloadBytes(result); err == nil && n > MaxResultBytes {
			return nil, Permanent(fmt.Errorf("handler %s returned a result of %d bytes, over the %d a result may have (TaskManager stores at most %d)", name, n, MaxResultBytes, taskmanager.MaxStoredBytes))
		}
		if err == nil && in.ProgressDone != nil {
			waitPosted(ctx, p.postTaskProgress(in.Attempt, *in.ProgressDone))
		}
		return result, err
	}
}

// MaxResultBytes bounds a handler's result: a larger one fails the task
// for good, saying so. TaskManager stores at most 65,535 bytes of it (as
// PHP re-encodes it, which may shrink escapes), and Temporal refuses a
// payload over 2 MiB: past that a regular activity's completion is
// refused and its handler run again until its attempts are spent, and a
// local activity's workflow task fails over and over.
const MaxResultBytes = 1 << 20

// payloadBytes is the size of result as Temporal's JSON payload converter
// writes it in the run's history: encoding/json escapes <, > and & (6 bytes
// each) and U+2028, U+2029 (6 bytes for 3).
func payloadBytes(result json.RawMessage) int {
	return len(result) + 5*bytes.Count(result, []byte("<")) + 5*bytes.Count(result, []byte(">")) + 5*bytes.Count(result, []byte("&")) +
		3*bytes.Count(result, []byte("\u2028")) + 3*bytes.Count(result, []byte("\u2029"))
}

// readsFirst says why a handler attempt reads the task before its
// handler runs, when ReadOnRetry allows ("" when it does not): a retried
// attempt, a local rerun (SkipIfDone), a local step scheduled in a replay
// (ReadFirst), a local handler whose run left this process while it
// waited (RunToken).
func readsFirst(info activity.Info, in HandlerInput) string {
	switch {
	case info.Attempt > 1:
		return "retry"
	case in.SkipIfDone:
		return "rerun"
	case in.ReadFirst:
		return "replay"
	case info.IsLocalActivity && in.RunToken != 0 && heldrun.Released(in.RunToken):
		return "run left the worker"
	}
	return ""
}

// recordedOutcome reads the task and, when it is no longer claimed (this
// run's earlier execution reported its outcome), returns that outcome so
// the handler does not run again for a claim that is over.
func (a *Activities) recordedOutcome(ctx context.Context, in HandlerInput) (json.RawMessage, error, bool) {
	var t taskmanager.Task
	var err error
	// Retried here, within the attempt's time: a TaskManager outage must
	// not use up the handler's own attempts.
	for wait := time.Second; ; wait = min(2*wait, 10*time.Second) {
		if t, err = a.TaskManager.GetTask(ctx, taskmanager.ID(in.TaskID)); err == nil || !taskmanager.Retryable(err) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, Transient(fmt.Errorf("read task before running its handler again: %w", err), taskmanager.RetryAfter(err)), true
		case <-time.After(max(wait, taskmanager.RetryAfter(err))):
		}
	}
	if err != nil {
		return nil, nil, false // gone or unreadable for good: run the handler; the report decides
	}
	switch t.Status {
	case taskmanager.StatusCompleted:
		a.logger().Info("handler not run again: the task's outcome was reported already", "task_id", in.TaskID)
		out, err := normalizeResult(t.Result.Raw())
		return out, err, true
	case taskmanager.StatusFailed, taskmanager.StatusPending:
		if t.Error != "" {
			a.logger().Info("handler not run again: the task's failure was reported already", "task_id", in.TaskID)
			return nil, Permanent(errors.New(t.Error)), true
		}
	}
	return nil, nil, false
}

// claimOver reads the task before a handler runs, for why (readsFirst: a
// retried attempt, a local handler's rerun after recordedOutcome, a local
// step in a replay, a local handler whose run left the worker), and
// returns an ErrTypeClaimOver error, for good, with what it read
// (ClaimSeen) as its details, when the claim the handler runs for is over
// (ClaimSeen.endsClaim). A claim of the same worker id with more attempts
// is this bridge's renewal (its run learns of it by signal), so it holds.
// Once a claim timed out, another worker may have claimed the task and
// run it: the handler must not run beside it. A task that cannot be read
// within a quarter of the attempt's time, or that reads in a way that
// shows no other holder, runs the handler: the report decides.
func (a *Activities) claimOver(ctx context.Context, in HandlerInput, why string) error {
	if a.TaskManager == nil {
		return nil // a worker of handlers only: nothing to read with
	}
	// A quarter of the attempt's time at most: a stalled TaskManager must
	// not use up the retries of a handler that would succeed.
	rctx := ctx
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(ctx, time.Until(d)/4)
		defer cancel()
	}
	t, err := a.TaskManager.GetTask(rctx, taskmanager.ID(in.TaskID))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // cancelled or timed out: no handler starts
		}
		a.logger().Warn("cannot read the task before running its handler: the handler runs", "task_id", in.TaskID, "read_because", why, "error", err)
		return nil
	}
	// Judged on the whole claimed_by, kept cut short (MayHold compares so).
	seen := ClaimSeen{Status: t.Status, WorkerID: t.ClaimedBy, Attempts: int(t.Attempts)}
	if !seen.endsClaim(in.WorkerID, in.Attempt) {
		return nil
	}
	seen.WorkerID = clipSeen(seen.WorkerID)
	a.logger().Info("handler not run: its claim is over", "task_id", in.TaskID, "worker_id", in.WorkerID, "attempt", in.Attempt, "read_because", why, "taskmanager", seen.String())
	// Benign: an expected end, not an incident (the SDK logs it at debug).
	return temporal.NewApplicationErrorWithOptions(
		taskmanager.ValidUTF8(fmt.Sprintf("task %s: the claim (%q, attempt %d) was over when its handler was to run (TaskManager: %s): the handler did not run", in.TaskID, in.WorkerID, in.Attempt, seen)),
		ErrTypeClaimOver, temporal.ApplicationErrorOptions{NonRetryable: true, Details: []any{seen}, Category: temporal.ApplicationErrorCategoryBenign})
}

// ClaimSeen is what a read showed of a task whose claim was over: the
// details of an ErrTypeClaimOver error.
type ClaimSeen struct {
	Status   string `json:"status"`
	WorkerID string `json:"worker_id,omitempty"` // claimed_by
	Attempts int    `json:"attempts"`
}

// endsClaim reports whether the task, as seen, is past the claim of
// workerID with attempts: TaskManager can no longer take its outcome. It
// is when the task is completed or failed, pending again with at least
// as many attempts (that claim, or a later one, failed), or claimed by
// another worker id with more attempts (a later claim). Anything else (no
// claimed_by, an unknown status, fewer attempts: a read that lags) may
// still be that claim's.
func (s ClaimSeen) endsClaim(workerID string, attempts int) bool {
	switch s.Status {
	case taskmanager.StatusCompleted, taskmanager.StatusFailed:
		return true
	case taskmanager.StatusPending:
		return s.Attempts >= attempts
	case taskmanager.StatusClaimed:
		return s.WorkerID != "" && s.WorkerID != workerID && s.Attempts > attempts
	}
	return false
}

// maxSeenWorkerID bounds the claimed_by a ClaimSeen keeps (TaskManager's
// data, quoted in errors and written in history).
const maxSeenWorkerID = 256

// clipSeen is a worker id as a ClaimSeen keeps it.
func clipSeen(workerID string) string { return taskmanager.Clip(workerID, maxSeenWorkerID, "…") }

// MayHold reports whether claim (workerID, attempts), which reached the
// run after the handler was scheduled (before the read or after it), may
// still hold the task: it is later than what the read saw, or is the
// claim the read saw.
func (s ClaimSeen) MayHold(workerID string, attempts int) bool {
	return attempts > s.Attempts || (s.Status == taskmanager.StatusClaimed && s.WorkerID == clipSeen(workerID) && s.Attempts == attempts)
}

// String is the task's state as seen, its claimed_by cut short.
func (s ClaimSeen) String() string {
	if s.Status == taskmanager.StatusClaimed {
		return fmt.Sprintf("claimed by %.64q, attempt %d", s.WorkerID, s.Attempts)
	}
	return fmt.Sprintf("%.32q, attempt %d", s.Status, s.Attempts)
}

// normalizeResult makes a handler's result a JSON object, as TaskManager
// stores it: empty becomes {}, any other value becomes {"value": v}.
func normalizeResult(out json.RawMessage) (json.RawMessage, error) {
	obj, err := taskmanager.AsObject(out)
	if err != nil {
		return nil, Permanent(errors.New("handler returned invalid JSON"))
	}
	// Bytes that are not UTF-8 (only inside strings, in valid JSON) become
	// U+FFFD: TaskManager (PHP's json_decode) refuses a body with them.
	return json.RawMessage(taskmanager.ValidUTF8(string(obj))), nil
}

// ProgressActivityName is the registered name of the progress activity
// that multi-step runs started before progress-in-handlers called as
// steps completed (newer runs hand progress to the steps' handlers): it
// stays registered so that those runs finish. Activities.PostProgress
// serves it; it is not the ReportProgress function handlers call.
const ProgressActivityName = "tmbridge.ReportProgress"

// ProgressInput is a progress report for a task.
type ProgressInput struct {
	TaskID   string `json:"task_id"`
	WorkerID string `json:"worker_id"`
	Percent  int    `json:"percent"`
	Message  string `json:"message,omitempty"`
}

// PostProgress is the progress activity: it posts a task's progress to
// TaskManager (best effort: the workflow ignores a failure). Handlers call
// the package's ReportProgress instead.
func (a *Activities) PostProgress(ctx context.Context, in ProgressInput) error {
	return a.TaskManager.Progress(ctx, taskmanager.ID(in.TaskID), in.WorkerID, min(max(in.Percent, 0), 100), in.Message)
}

// maxPostWait bounds how long a handler that succeeded waits for its
// progress to reach TaskManager before it returns.
const maxPostWait = 5 * time.Second

// waitPosted waits until posted is closed, for at most maxPostWait and
// half the attempt's time left: the next step, which may run in another
// process, then posts after this one, while a slow TaskManager never costs
// a handler its result.
func waitPosted(ctx context.Context, posted <-chan struct{}) {
	if posted == nil {
		return
	}
	wait := maxPostWait
	if deadline, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(deadline)/2)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-posted:
	case <-t.C:
	case <-ctx.Done():
	}
}
