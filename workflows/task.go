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

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/internal/heldrun"
	"github.com/prismq/tmbridge/taskmanager"
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
	// ClaimedAt is when the bridge made the claim (its clock); zero when
	// unknown (a claim recovered after a crash).
	ClaimedAt time.Time `json:"claimed_at,omitzero"`
}

// same reports whether c and o are the same claim.
func (c Claim) same(o Claim) bool { return c.WorkerID == o.WorkerID && c.Attempts == o.Attempts }

// TaskInput is TaskWorkflow's input. It never holds a secret.
type TaskInput struct {
	Task    Task        `json:"task"`
	Claim   Claim       `json:"claim"`
	Options TypeOptions `json:"options"`
	// ClaimTimeout is TaskManager's claim timeout: the outcome of a claim
	// older than half of it is posted only after reading the task (0: the
	// default 300s).
	ClaimTimeout time.Duration `json:"claim_timeout,omitempty"`
	// ReadOnRetry: a handler attempt that Temporal retries (and a local
	// handler run again after a takeover, or whose run left the worker
	// while it waited) reads the task first, and runs no handler once
	// the claim is over; the run then reports nothing and ends
	// ClaimLost, or continues as new for a newer claim that reached it
	// (activities.HandlerInput.ReadOnRetry). Only for a handler on
	// the bridge's own worker: a type of one handler (readsOnRetry), or a
	// step (pipeline.execute, in runs since stepsReadOnRetry). Every
	// bridge since this field sets it; runs started before it retry
	// unread.
	ReadOnRetry bool `json:"read_on_retry,omitempty"`
}

// DefaultClaimTimeout is TaskManager's default TASK_CLAIM_TIMEOUT.
const DefaultClaimTimeout = 300 * time.Second

// mayHaveExpired reports whether claim c may have timed out in TaskManager
// and been handed out again, possibly to the same worker id: TaskManager
// would then take an outcome posted with that worker id for the new claim.
func (in TaskInput) mayHaveExpired(ctx workflow.Context, c Claim) bool {
	return c.ClaimedAt.IsZero() || !workflow.Now(ctx).Before(in.readFirstFrom(c))
}

// startedLate reports whether the run starts when its claim, made by a
// bridge at a known time, may have timed out already (a start delayed by
// Temporal being slow or away). A claim of a time not known (found again
// by a sweep, which read the task just before the start) is not.
func (in TaskInput) startedLate(ctx workflow.Context) bool {
	return !in.Claim.ClaimedAt.IsZero() && in.mayHaveExpired(ctx, in.Claim)
}

// readFirstFrom is when claim c is old enough (half the claim timeout) to
// have timed out and been handed out again: a report posting from then on
// reads the task first, wherever it waited meanwhile.
func (in TaskInput) readFirstFrom(c Claim) time.Time {
	return c.ClaimedAt.Add(in.claimTimeout() / 2)
}

// claimTimeout is TaskManager's claim timeout, as the bridge knows it.
func (in TaskInput) claimTimeout() time.Duration {
	if in.ClaimTimeout <= 0 {
		return DefaultClaimTimeout
	}
	return in.ClaimTimeout
}

// continueFor ends the run, continuing it as new for claim c.
func (in TaskInput) continueFor(ctx workflow.Context, c Claim) error {
	next := in
	next.Claim, next.Task.Attempts = c, c.Attempts
	return workflow.NewContinueAsNewError(ctx, TaskWorkflowName, next)
}

// retryFoundClaimOver reports whether herr is the handler's own report
// that a retried attempt found its claim over and ran no handler
// (activities.ErrTypeClaimOver, asked for by ReadOnRetry), and what its
// read saw. Only a task of one handler on the bridge's own worker asks
// for the read; an error of that type without what was seen is the
// handler's own, a failure like any other.
func retryFoundClaimOver(in TaskInput, opts TypeOptions, herr error) (activities.ClaimSeen, bool) {
	if !in.ReadOnRetry || !readsOnRetry(opts) {
		return activities.ClaimSeen{}, false
	}
	return claimSeenIn(herr)
}

// claimSeenIn returns what the read of a handler activity that asked for
// it (activities.HandlerInput.ReadOnRetry) saw, when herr is that read's
// activities.ErrTypeClaimOver: the claim was over, and no handler ran.
func claimSeenIn(herr error) (activities.ClaimSeen, bool) {
	var seen activities.ClaimSeen
	var appErr *temporal.ApplicationError
	if !errors.As(herr, &appErr) || appErr.Type() != activities.ErrTypeClaimOver {
		return seen, false
	}
	return seen, appErr.Details(&seen) == nil && seen.Status != ""
}

// readsOnRetry reports whether a type's handler reads its task before a
// retried attempt when the run asks (TaskInput.ReadOnRetry): a handler on
// the bridge's own worker. A Go workflow handler does not; nor does a
// handler routed to another task queue, whose worker (perhaps of another
// SDK) may not read. A type of steps asks step by step (pipeline.execute).
func readsOnRetry(opts TypeOptions) bool {
	return len(opts.Steps) == 0 && opts.Workflow == "" && opts.TaskQueue == ""
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
// (ClaimLost, NotClaimed, …). A run that finds its claim over before its
// handler (or a step) runs posts nothing and ends ClaimLost; one that a
// newer claim reached continues as new for it.
func TaskWorkflow(ctx workflow.Context, in TaskInput) (TaskResult, error) {
	// Released when the run ends or leaves the worker: a local handler
	// still waiting for a slot then reads first (HandlerInput.RunToken).
	token, release := heldrun.Hold()
	defer release()
	ctx = workflow.WithValue(ctx, heldRunKey{}, token)
	log := workflow.GetLogger(ctx)
	opts := in.Options // resolved by the bridge (Config.TypeOptions)
	claims := followClaims(ctx, in.Claim)
	recordClaimInMemo(ctx, in.Claim)
	if in.startedLate(ctx) && workflow.GetVersion(ctx, changeReadLateStart, workflow.DefaultVersion, 1) == 1 &&
		claimOverAtStart(ctx, in.Task.ID, claims) {
		msg := fmt.Sprintf("task %s: the claim (%q, attempt %d) was over before its handler started: no handler runs, nothing is reported", in.Task.ID, claims.current.WorkerID, claims.current.Attempts)
		log.Info(msg)
		return TaskResult{}, temporal.NewNonRetryableApplicationError(msg, activities.ErrTypeClaimLost, nil)
	}

	handlerClaim := claims.current
	result, last, herr := runTask(ctx, in, opts, claims)
	if seen, ok := retryFoundClaimOver(in, opts, herr); ok && workflow.GetVersion(ctx, changeRetryReadsFirst, workflow.DefaultVersion, 1) == 1 {
		// The handler's attempt read the task and ran no handler: nothing
		// is reported. A claim that reached the run since, and that the
		// read did not show over, gets a run of its own.
		claims.drain(ctx)
		if c := claims.current; !c.same(handlerClaim) && seen.MayHold(c.WorkerID, c.Attempts) {
			log.Info("the handler's claim was over, and a newer claim reached the run: continuing as new for it", "task_id", in.Task.ID, "claim", c)
			return TaskResult{}, in.continueFor(ctx, c)
		}
		msg := errorMessage(herr) + ": nothing is reported"
		log.Info(msg)
		return TaskResult{}, temporal.NewNonRetryableApplicationError(msg, activities.ErrTypeClaimLost, nil)
	}
	if claims.over {
		claims.drain(ctx)
		if claims.newerMayHold() {
			// A newer claim reached the run after its claim was judged
			// over, or while its steps stopped: it gets a run of its own.
			log.Info("a newer claim reached the run after its claim was over: continuing as new for it", "task_id", in.Task.ID, "claim", claims.current)
			return TaskResult{}, in.continueFor(ctx, claims.current)
		}
		msg := fmt.Sprintf("task %s: the claim (%q, attempt %d) was over %s: no step starts after it, nothing is reported", in.Task.ID, claims.overClaim.WorkerID, claims.overClaim.Attempts, claims.overWhen)
		log.Info(msg)
		return TaskResult{}, temporal.NewNonRetryableApplicationError(msg, activities.ErrTypeClaimLost, nil)
	}

	if herr != nil && claims.waitedForCancel() {
		// A claim signal may have come in the same workflow task as the
		// handler's end, unread: read it first.
		claims.drain(ctx)
		if claims.movedSinceCancel() && workflow.GetVersion(ctx, changeCancelClaimMoved, workflow.DefaultVersion, 1) == 1 {
			// The cancelled attempt's claim ended while its handler stopped
			// (it expired: a bridge claimed the task again). TaskManager
			// can no longer take that attempt's outcome, and the newer
			// claim's attempt has not run: it gets a run of its own, as it
			// would have had the cancel been reported at once.
			log.Info("run cancelled, and the task claimed again while its handler stopped: continuing as new for the newer claim", "task_id", in.Task.ID, "claim", claims.current)
			return TaskResult{}, in.continueFor(ctx, claims.current)
		}
	}
	out := buildOutcome(in.Task, result, herr)
	if herr != nil && claims.waitedForCancel() {
		out = cancelledOutcome(in.Task.Type, herr)
	}
	if out.Success {
		out.Progress = last
	}
	rep, err := report(ctx, in, opts, claims, out)
	if err != nil {
		log.Error("outcome not reported", "task_id", in.Task.ID, "error", err)
		return TaskResult{}, err
	}
	out = rep.Sent
	res := TaskResult{Status: rep.Status, Success: out.Success, Result: out.Result, Error: out.Error, WorkerID: rep.ReportedWith.WorkerID}
	// A failure re-queues the task, and a bridge may claim it again before
	// this run closes: its claim's signal (startOrSignal) lands here. Run the task
	// again, as a new run, for that claim.
	claims.drain(ctx)
	if !out.Success && rep.Status != "failed" && claims.current.Attempts > rep.ReportedWith.Attempts &&
		!newerClaimOver(ctx, in.Task.ID, rep.ReportOutput, claims) {
		log.Info("task claimed again while this run closed: continuing as new", "task_id", in.Task.ID, "claim", claims.current)
		return res, in.continueFor(ctx, claims.current)
	}
	if ctx.Err() != nil {
		return res, ctx.Err() // cancelled, and the outcome is reported
	}
	if !out.Success {
		log.Warn("task failed", "task_id", in.Task.ID, "task_type", in.Task.Type, "error", out.Error, "taskmanager_status", rep.Status)
		return res, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("task %s failed (TaskManager: %s): %s", in.Task.ID, rep.Status, out.Error), TaskFailedErrorType, nil, res)
	}
	return res, nil
}

// newerClaimOver reports whether the run's current claim, newer than the
// one the report was made with, is already over, so that no handler must
// run for it: the task as the report read it had reached the claim's
// attempt count and was no longer claimed (this run's post, made with the
// same worker id, ended it), or (changeReadClaimOver) had gone past it
// (claimed again since). When the report could not read the task after
// its post, the task is read now, through the retries of an activity,
// even in a cancelled run; claims that reach the run meanwhile are taken,
// and the decision is about the newest.
func newerClaimOver(ctx workflow.Context, taskID string, rep activities.ReportOutput, claims *claimState) bool {
	c := claims.current
	if rep.ReadAttempts >= c.Attempts && rep.ReadStatus != "" && rep.ReadStatus != "claimed" {
		return true
	}
	superseded := rep.ReadStatus != "" && rep.ReadAttempts > c.Attempts
	if !superseded && !rep.ReadBackFailed {
		return false
	}
	if workflow.GetVersion(ctx, changeReadClaimOver, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return false
	}
	if superseded {
		return true
	}
	// A claim that holds the task gets its run, cancelled or not.
	return readClaimOver(ctx, taskID, "after the report", claims)
}

// claimOverAtStart reads the task before a run that started late runs
// its handler: the start may have come after the claim ended and the task
// was claimed again, or ended.
func claimOverAtStart(ctx workflow.Context, taskID string, claims *claimState) bool {
	return readClaimOver(ctx, taskID, "before its handler (a late start)", claims)
}

// readClaimOver reads the task (a tmbridge.ReadTask activity, retried
// until TaskManager answers, in a context a cancel of the run does not
// end), taking the claims that reach the run meanwhile, and reports
// whether the newest is over: the task has gone past its attempt, or is
// at it and no longer claimed, or is gone from TaskManager. A read given
// up on (a test environment caps the retries) is not known: not over, and
// the claim's run decides as it would have without the read.
func readClaimOver(ctx workflow.Context, taskID, why string, claims *claimState) bool {
	over, _ := readClaim(ctx, taskID, why, claims)
	return over
}

// readClaim is readClaimOver, and whether the task has gone past the
// newest claim's attempt (past: claimed again since, by a claim whose
// signal may be on its way).
func readClaim(ctx workflow.Context, taskID, why string, claims *claimState) (over, past bool) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	actx := workflow.WithActivityOptions(dctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: time.Minute},
		Summary:             "read task " + taskID + " " + why,
	})
	f := workflow.ExecuteActivity(actx, activities.ReadTaskActivityName, taskID)
	claims.wait(dctx, f)
	claims.drain(dctx)
	var st activities.TaskState
	if err := f.Get(dctx, &st); err != nil {
		return activities.IsPermanent(err), false
	}
	c := claims.current
	past = st.Attempts > c.Attempts
	return past || (st.Attempts == c.Attempts && st.Status != taskmanager.StatusClaimed), past
}

// heldRunKey carries the run's heldrun.Hold token in its context.
type heldRunKey struct{}

// heldRun is the run's heldrun.Hold token (0 outside TaskWorkflow).
func heldRun(ctx workflow.Context) uint64 {
	token, _ := ctx.Value(heldRunKey{}).(uint64)
	return token
}

// firstTaskEvents is the history length while a run's first workflow
// task runs: started, task scheduled, task started.
const firstTaskEvents = 3

// Change ids of workflow.GetVersion: each names a change to the commands
// TaskWorkflow issues, so that runs started by an older bridge replay.
const (
	// changeReportSurvivesCancel: a cancel that arrives while the outcome
	// is being reported no longer cancels the report.
	changeReportSurvivesCancel = "report-survives-cancel"
	// changeClaimInMemo: a run records in its memo (attempt, worker_id) each
	// newer claim that reaches it, and a run continued as new the claim it
	// was continued for.
	changeClaimInMemo = "claim-in-memo"
	// changeExactTemplates: step templates see exact numbers, any single
	// action keeps its JSON type, and rendered params over
	// MaxStepParamsBytes fail the step (template.go; before:
	// template_legacy.go).
	changeExactTemplates = "exact-templates"
	// changeProgressInHandlers: a multi-step task's progress is posted to
	// TaskManager by its steps' handler activities and the report, not by
	// one progress local activity per update (progress.go). Its version
	// stepsWaitCancel (2) adds: the steps' regular handler activities are
	// scheduled with WaitForCancellation, and a parallel group that fails
	// waits for the steps it cancelled to stop (steps.go). One change id
	// with a higher version, not a new one: no more history events.
	changeProgressInHandlers = "progress-in-handlers"
	// changeWaitHandlerCancel: a cancelled run waits until its (regular)
	// handler activity stopped before it reports, and notes the claim it
	// had at the cancel (as it does for a Go workflow handler, which was
	// waited for already); the version is taken only when the run is
	// cancelled while its handler runs.
	changeWaitHandlerCancel = "wait-handler-cancel"
	// changeCancelClaimMoved: a cancelled run whose claim moved while it
	// waited for its handler to stop continues as new for the newer claim,
	// instead of reporting the cancel with it; taken only then.
	changeCancelClaimMoved = "cancel-claim-moved"
	// changeAwaitByRetries: an enqueue step waits for its task through the
	// retries of one tmbridge.AwaitTask activity, which add no history
	// event, instead of a timer and a tmbridge.ReadTask marker per read
	// (compose.go); taken by each enqueue step as its wait begins, under
	// its own id (this one + "/" + the step's name).
	changeAwaitByRetries = "await-by-retries"
	// changeTemplateWork: step templates are rendered within a work
	// budget per workflow task (maxTemplateWork), a step whose templates
	// pass it failing; taken only when a render passes it (a run before
	// it renders without).
	changeTemplateWork = "template-work"
	// changeBoundedRender: a template stops rendering at
	// MaxStepParamsBytes, its step failing with no params; taken only
	// when a render passes it (a run before it renders in full, and a
	// for_each counts the failed item's params, as it did).
	changeBoundedRender = "bounded-render"
	// changeDropBadSignal: a signal whose payload does not decode (another
	// codec, the wrong shape) is dropped, and the run goes on waiting for
	// its other cases (a timeout, a cancel, its handler); taken only when
	// such a signal comes. Before, the run waited for the channel's next
	// signal, deaf to the rest (receiveSignal).
	changeDropBadSignal = "drop-bad-signal"
	// changeForEachParamsBound: a for_each step whose items' params add
	// up past MaxForEachParamsBytes fails, with a message saying so,
	// instead of scheduling on until Temporal ends the run at its history
	// size limit; taken only when the bound is passed.
	changeForEachParamsBound = "for-each-params-bound"
	// changeHistoryGuard: a handler step or for_each item starts only
	// while the run's history has room for the results of the handlers
	// running (pipeline.room); a for_each or parallel group waits for
	// room, a step that cannot start fails the task. Taken only when room
	// lacks. Before, steps were scheduled on until Temporal ended the run.
	changeHistoryGuard = "history-guard"
	// changeGuardEnqueue: the history guard counts enqueue steps too, as
	// handlers routed to another queue (their params, and a result of up
	// to Temporal's payload limit); taken as a run's first enqueue step
	// starts. Before, they were not counted.
	changeGuardEnqueue = "history-guard-enqueue"
	// changePHPEmptyObjects: a step's params template that fails is
	// rendered again with empty lists read as empty objects (the PHP
	// deployment hands {} back as []), and that rendering taken; taken
	// only when it renders. Before, the step failed.
	changePHPEmptyObjects = "php-empty-objects"
	// changeReadClaimOver: a run that reported a failure, and got a newer
	// claim meanwhile, runs no handler for it when the report's read shows
	// the task claimed again past it, or reads the task itself (a
	// tmbridge.ReadTask activity) when the report could not read it after
	// its post. Taken only then. Before, the run continued as new for it.
	changeReadClaimOver = "read-claim-over"
	// changeReadLateStart: a run whose claim may have timed out before it
	// started (older than half the claim timeout: TaskInput.startedLate)
	// reads the task before its handler runs, and runs none when the claim
	// is over (claimOverAtStart). Taken only by such runs. Before, a start
	// that came late ran the handler for a task claimed by another worker,
	// or ended.
	changeReadLateStart = "read-late-start"
	// changeRetryReadsFirst: a handler run again (an attempt Temporal
	// retried, a local rerun) found the claim over (TaskInput.ReadOnRetry)
	// and ran no handler: the run reports nothing, and ends or continues
	// as new for a newer claim the read did not show over. Taken only by
	// such runs, which only bridges since ReadOnRetry start; before, a
	// retry ran its handler unread.
	changeRetryReadsFirst = "retry-reads-first"
)

// stepsWaitCancel is the version of changeProgressInHandlers whose runs
// wait for their cancelled steps to stop.
const stepsWaitCancel workflow.Version = 2

// stepsGuardClaim is the version of changeProgressInHandlers whose runs
// read the task before a step starts when the claim may be over (a claim
// older than half the claim timeout, or a local step past the run's first
// workflow task), and start no step once it is (pipeline.claimOver).
// Before, the steps after a claim that timed out and went to another
// worker still ran, enqueue steps created their tasks, and a bridge that
// took over a run whose first workflow task had reported its outcome
// then died ran every local step again.
const stepsGuardClaim workflow.Version = 3

// stepsReadOnRetry is the version of changeProgressInHandlers whose runs,
// when they ask for it (TaskInput.ReadOnRetry), have a step's handler on
// the bridge's own worker read the task before a retried attempt, as a
// task of one handler does, and start no step once a read showed the claim
// over (pipeline.handlerEnded). Before, a step's retried attempt ran its
// handler unread, beside a worker that had claimed the task since.
const stepsReadOnRetry workflow.Version = 4

// recordClaimInMemo keeps the memo's attempt and worker_id those of the
// claim this run serves. The bridge reads them to tell whether a run exists
// for a claim; a run continued as new inherits its predecessor's memo.
func recordClaimInMemo(ctx workflow.Context, c Claim) {
	if m := ClaimInMemo(workflow.GetInfo(ctx).Memo); m.same(c) || m == (Claim{}) {
		return // started for this claim, or started without a memo (tests)
	}
	upsertClaimMemo(ctx, c)
}

// ClaimInMemo returns the claim a run's memo names (MemoWorkerID,
// MemoAttempt; zero when it names none): the claim the run serves.
func ClaimInMemo(m *commonpb.Memo) Claim {
	var c Claim
	dc := converter.GetDefaultDataConverter()
	if p := m.GetFields()[MemoAttempt]; p != nil {
		_ = dc.FromPayload(p, &c.Attempts)
	}
	if p := m.GetFields()[MemoWorkerID]; p != nil {
		_ = dc.FromPayload(p, &c.WorkerID)
	}
	return c
}

// upsertClaimMemo records in the memo the claim the run serves from now on.
// The bridge reads it to tell whether a run served a claim: a run that
// reported with a claim that reached it by signal must say so, or a bridge
// recovering that claim would start it again.
func upsertClaimMemo(ctx workflow.Context, c Claim) {
	if workflow.GetVersion(ctx, changeClaimInMemo, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return
	}
	if err := workflow.UpsertMemo(ctx, map[string]any{MemoAttempt: c.Attempts, MemoWorkerID: c.WorkerID}); err != nil {
		workflow.GetLogger(ctx).Warn("cannot record the claim in the memo", "error", err)
	}
}

// Memo keys the bridge sets on each run.
const (
	MemoTaskID   = "task_id"
	MemoTaskType = "task_type"
	MemoAttempt  = "attempt"   // TaskManager's attempt count of the claim the run serves
	MemoWorkerID = "worker_id" // the worker id of that claim
)

// claimState follows the task's claim as signals move it. Signals are only
// read on the workflow's main coroutine (in wait, waitChange and drain), so
// that none is left unread when the run closes.
type claimState struct {
	current Claim
	version int // bumped on every change
	// cancelSeen is version when the run, cancelled, began to wait for its
	// handler to stop (changeWaitHandlerCancel, or a multi-step run's steps
	// with noteCancel); -1 when it did not.
	cancelSeen int
	noteCancel bool // the run's steps are waited for when cancelled
	// over: a read before a step showed the claim over, and no newer
	// claim came within claim_wait (stepsGuardClaim), or a step's retried
	// attempt did (stepsReadOnRetry): no step starts, and the run reports
	// nothing. overClaim is the claim found over, and overSeen (when
	// set: a retried attempt's read) what the read saw of the task: a
	// newer claim that reached the run, and that the read did not show
	// over, gets a run of its own (newerMayHold). overWhen says when it
	// was found over, for messages.
	over      bool
	overClaim Claim
	overSeen  *activities.ClaimSeen
	overWhen  string
	ch        workflow.ReceiveChannel
}

// judgeOver records that claim c was found over, when, and (seen, when
// not nil) what the read that found it saw of the task. The first
// judgement stands, but a later read that saw the task further on is
// kept: a claim it showed over gets no run of its own.
func (st *claimState) judgeOver(c Claim, when string, seen *activities.ClaimSeen) {
	if !st.over {
		st.over, st.overClaim, st.overWhen, st.overSeen = true, c, when, seen
		return
	}
	if seen != nil && (st.overSeen == nil || seen.Attempts > st.overSeen.Attempts) {
		st.overSeen = seen
	}
}

// newerMayHold reports whether, the claim found over, the run's current
// claim is a newer one that may hold: one the read that found it over
// did not show over (after the read before a step, which keeps no
// ClaimSeen, any newer claim).
func (st *claimState) newerMayHold() bool {
	c := st.current
	return st.over && !c.same(st.overClaim) && (st.overSeen == nil || st.overSeen.MayHold(c.WorkerID, c.Attempts))
}

func followClaims(ctx workflow.Context, initial Claim) *claimState {
	st := &claimState{current: initial, ch: workflow.GetSignalChannel(ctx, ClaimSignalName), cancelSeen: -1}
	_ = workflow.SetQueryHandler(ctx, ClaimQueryName, func() (Claim, error) { return st.current, nil })
	return st
}

// apply takes a claim that is newer than the current one; a late signal
// of an older claim is ignored.
func (st *claimState) apply(ctx workflow.Context, c Claim) {
	if c.WorkerID == "" || c.same(st.current) || c.Attempts < st.current.Attempts {
		return
	}
	workflow.GetLogger(ctx).Info("claim moved", "from", st.current.WorkerID, "to", c.WorkerID, "attempts", c.Attempts)
	st.current = c
	st.version++
	upsertClaimMemo(ctx, c)
}

func (st *claimState) receive(ctx workflow.Context) func(workflow.ReceiveChannel, bool) {
	return func(ch workflow.ReceiveChannel, _ bool) {
		var c Claim
		if receiveSignal(ctx, ch, &c) {
			st.apply(ctx, c)
		}
	}
}

// receiveSignal takes the signal that made a selector fire into valuePtr.
// One whose payload does not decode is dropped, with a warning, and ok is
// false: the caller's loop goes on waiting for its other cases. (The SDK's
// Receive drops it too, but then blocks until the channel's next signal,
// inside the selector's callback: a timeout, a cancel or a handler that
// finished went unseen; runs before changeDropBadSignal did so.)
func receiveSignal(ctx workflow.Context, ch workflow.ReceiveChannel, valuePtr any) (ok bool) {
	if ch.ReceiveAsync(valuePtr) {
		return true
	}
	if workflow.GetVersion(ctx, changeDropBadSignal, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		ch.Receive(ctx, valuePtr)
		return true
	}
	workflow.GetLogger(ctx).Warn("signal dropped: its payload does not decode", "signal", ch.Name())
	return false
}

// wait blocks until f is ready, following claim signals meanwhile.
func (st *claimState) wait(ctx workflow.Context, f workflow.Future) {
	for !f.IsReady() {
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(f, func(workflow.Future) {})
		sel.AddReceive(st.ch, st.receive(ctx))
		sel.Select(ctx)
	}
}

// waitCancellable is wait for a handler that is waited for when cancelled:
// a regular activity scheduled with WaitForCancellation, or a Go workflow
// handler (the SDK settles a child's future only once the child closed).
// When the run is cancelled, a newer run (changeWaitHandlerCancel) waits
// until the handler stopped, noting the claim it had then. A run cancelled
// before that change stops waiting for an activity at once, as it did (its
// future was ready at once), and returns true (with stopOld); it waits for
// a child, as it did, without noting.
func (st *claimState) waitCancellable(ctx workflow.Context, f workflow.Future, stopOld bool) bool {
	return st.waitNotingCancel(ctx, f, func() bool {
		if workflow.GetVersion(ctx, changeWaitHandlerCancel, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
			return stopOld
		}
		st.cancelSeen = st.version
		return false
	})
}

// waitSteps is wait for a multi-step run's steps. When the run is
// cancelled and its steps are waited for (noteCancel, set by runSteps at
// version stepsWaitCancel), it notes the claim the run had then. The
// cancel issues no command: runs of any version replay.
func (st *claimState) waitSteps(ctx workflow.Context, f workflow.Future) {
	st.waitNotingCancel(ctx, f, func() bool {
		if st.noteCancel {
			st.cancelSeen = st.version
		}
		return false
	})
}

// waitNotingCancel is wait that calls onCancel once, when the run is
// cancelled, taking the cancel before a claim signal received with it (an
// older run took the handler's future, ready at the cancel, before any
// such signal). It stops waiting, and returns true, when onCancel says so.
func (st *claimState) waitNotingCancel(ctx workflow.Context, f workflow.Future, onCancel func() (stop bool)) bool {
	watch := true
	for !f.IsReady() {
		stop := false
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(f, func(workflow.Future) {})
		if watch {
			sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) {
				watch = false
				stop = onCancel()
			})
		}
		sel.AddReceive(st.ch, st.receive(ctx))
		sel.Select(ctx)
		if stop {
			return true
		}
	}
	return false
}

// waitedForCancel reports whether the run, cancelled, waited for its
// handler to stop.
func (st *claimState) waitedForCancel() bool { return st.cancelSeen >= 0 }

// movedSinceCancel reports whether a newer claim reached the run while it
// waited for its cancelled handler to stop.
func (st *claimState) movedSinceCancel() bool {
	return st.waitedForCancel() && st.version != st.cancelSeen
}

// waitChange waits up to timeout for a claim newer than version seen.
func (st *claimState) waitChange(ctx workflow.Context, seen int, timeout time.Duration) bool {
	tctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	timer := workflow.NewTimer(tctx, timeout)
	for st.version == seen && !timer.IsReady() && ctx.Err() == nil {
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(timer, func(workflow.Future) {})
		sel.AddReceive(st.ch, st.receive(ctx))
		sel.Select(ctx)
	}
	return st.version != seen
}

// drain applies the claim signals received but not yet read.
func (st *claimState) drain(ctx workflow.Context) {
	for {
		var c Claim
		if !st.ch.ReceiveAsync(&c) {
			return
		}
		st.apply(ctx, c)
	}
}

// runTask runs the task's handler, child workflow or steps, following
// claim signals while it runs. It returns the result and, for steps, the
// task's last progress for the report to post.
func runTask(ctx workflow.Context, in TaskInput, opts TypeOptions, claims *claimState) (json.RawMessage, *activities.Progress, error) {
	input := activities.HandlerInput{
		TaskID: in.Task.ID, TaskType: in.Task.Type, Params: in.Task.Params,
		Attempt: claims.current.Attempts, WorkerID: claims.current.WorkerID,
	}
	var f workflow.Future
	var last *activities.Progress
	switch {
	case len(opts.Steps) > 0:
		fut, settle := workflow.NewFuture(ctx)
		workflow.Go(ctx, func(gctx workflow.Context) {
			out, p, err := runSteps(gctx, in, opts, claims)
			last = p
			settle.Set(out, err)
		})
		f = fut
		claims.waitSteps(ctx, f)
	case opts.Workflow != "":
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
			WorkflowID:    workflow.GetInfo(ctx).WorkflowExecution.ID + "/" + opts.Workflow,
			TaskQueue:     opts.TaskQueue,
			StaticSummary: taskSummary(in.Task, opts.Workflow),
		})
		f = workflow.ExecuteChildWorkflow(cctx, opts.Workflow, input)
		claims.waitCancellable(ctx, f, false)
	default:
		// A local handler past the run's first workflow task may be a rerun
		// of one whose outcome a dead bridge already reported, and so may
		// one scheduled in a replay of the first (which completed, by its
		// heartbeat, while the handler ran).
		input.SkipIfDone = opts.IsLocal() && (workflow.GetInfo(ctx).GetCurrentHistoryLength() > firstTaskEvents || workflow.IsReplaying(ctx))
		input.ReadOnRetry = in.ReadOnRetry && readsOnRetry(opts)
		if opts.IsLocal() {
			input.RunToken = heldRun(ctx)
		}
		// Runs started before the bridge resolved Handler leave it empty.
		handler := opts.HandlerFor(in.Task.Type)
		f = opts.executeHandler(ctx, taskSummary(in.Task, handler), handler, input)
		if !opts.IsLocal() && claims.waitCancellable(ctx, f, true) {
			return nil, nil, temporal.NewCanceledError() // as runs before changeWaitHandlerCancel saw it
		}
	}
	claims.wait(ctx, f)
	var out json.RawMessage
	err := f.Get(ctx, &out)
	return out, last, err
}

// outcome is what will be reported, and with a success the task's last
// progress, when it is still to post.
type outcome struct {
	Success  bool
	Result   json.RawMessage
	Error    string
	Progress *activities.Progress
}

// buildOutcome turns the handler's result or error into what TaskManager
// can store, measured as TaskManager stores it: a result over
// taskmanager.MaxStoredBytes fails the task, a longer error message is cut.
func buildOutcome(task Task, result json.RawMessage, err error) outcome {
	if err != nil {
		return failure(failureMessage(task.Type, err))
	}
	result, err = taskmanager.AsObject(result) // a Go workflow's result too
	if err != nil {
		return failure(fmt.Sprintf("result of %s is not JSON", task.Type))
	}
	result = json.RawMessage(taskmanager.ValidUTF8(string(result))) // as the report's JSON sends it
	if n := taskmanager.StoredResultSize(result); n > taskmanager.MaxStoredBytes {
		return failure(fmt.Sprintf("result of %s is %d bytes as TaskManager stores it, more than the %d it can store", task.Type, n, taskmanager.MaxStoredBytes))
	}
	return outcome{Success: true, Result: result}
}

// cancelledOutcome is the outcome of a cancelled run whose handler failed:
// the cancel, whatever the handler's attempt ended with while it stopped. A
// handler on a worker that died cannot hear the cancel: its activity times
// out, and a newer claim may have reached the run meanwhile. That attempt
// is the cancel's, not a failure of the handler's to count against it.
func cancelledOutcome(taskType string, err error) outcome {
	var cancelErr *temporal.CanceledError
	if errors.As(err, &cancelErr) {
		return failure(failureMessage(taskType, err))
	}
	return failure(fmt.Sprintf("%s was cancelled (its handler then ended: %s)", taskType, failureMessage(taskType, err)))
}

// failure is a failed outcome whose message TaskManager can store.
func failure(msg string) outcome {
	return outcome{Error: truncate(taskmanager.ValidUTF8(msg), taskmanager.MaxStoredBytes)}
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
	case errors.As(err, &appErr) && appErr.Type() == StepFailedErrorType:
		return appErr.Message() // already names the step and its cause
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

// truncate cuts valid UTF-8 s to at most limit bytes, on a rune boundary.
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

// report sends the outcome with the current claim, following the report
// rule of activities/report.go, until TaskManager has it:
//
//   - a cancel of the workflow never cancels the report (the outcome would
//     be lost and the task left claimed);
//   - ClaimLost (the task moved to another claim): wait up to ClaimWait
//     for that claim to reach this run, then report with it;
//   - a result TaskManager cannot store (413, "Data too long") or rejects
//     (400) becomes a failure that says so; an error message it cannot
//     store is cut, then replaced by a short one;
//   - TaskNotFound, NotClaimed, or no new claim within ClaimWait: the run
//     fails, since TaskManager can no longer take this outcome.
func report(ctx workflow.Context, in TaskInput, opts TypeOptions, claims *claimState, out outcome) (reported, error) {
	// Run in a context the workflow's cancel does not reach. Before this
	// change, a cancel that arrived during the report cancelled it.
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	rctx, cancelReport := workflow.WithCancel(dctx)
	watchCancel := ctx.Err() == nil
	readFirst := false
	shrunk := false
	for {
		claim := claims.current
		seen := claims.version
		ri := activities.ReportInput{
			TaskID: in.Task.ID, WorkerID: claim.WorkerID, Attempt: claim.Attempts,
			Success: out.Success, Result: out.Result, Error: out.Error, Progress: out.Progress,
			ReadFirst: readFirst || in.mayHaveExpired(ctx, claim),
			Short:     shrunk && !out.Success,
		}
		if !claim.ClaimedAt.IsZero() {
			// Decided again when the report runs: it may wait in the queue
			// past that time (activity slots full, workers down).
			ri.ReadFirstFrom = in.readFirstFrom(claim)
		}
		f := runReport(rctx, opts, ri)
		for !f.IsReady() {
			sel := workflow.NewSelector(rctx)
			sel.AddFuture(f, func(workflow.Future) {})
			sel.AddReceive(claims.ch, claims.receive(rctx))
			if watchCancel {
				sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) {
					watchCancel = false
					if workflow.GetVersion(ctx, changeReportSurvivesCancel, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
						cancelReport() // as runs of older bridges did
					}
				})
			}
			sel.Select(rctx)
		}
		var rep activities.ReportOutput
		err := f.Get(rctx, &rep)
		if err != nil {
			// An earlier post of this outcome may still land (its answer
			// was lost): every later report reads the task first.
			readFirst = true
		}
		switch {
		case err == nil:
			return reported{ReportOutput: rep, ReportedWith: claim, Sent: out}, nil
		case activities.HasErrorType(err, activities.ErrTypePayloadTooLarge), activities.HasErrorType(err, activities.ErrTypeRejected):
			why := "too large"
			if activities.HasErrorType(err, activities.ErrTypeRejected) {
				why = "invalid"
			}
			switch {
			case out.Success:
				out = failure(fmt.Sprintf("TaskManager refused the %d-byte result of %s as %s: %s", len(out.Result), in.Task.Type, why, errorMessage(err)))
			case len(out.Error) > 1024:
				out.Error = truncate(out.Error, 1024)
			case !shrunk:
				shrunk = true
				out.Error = fmt.Sprintf("%s failed; TaskManager refused its error message as %s", in.Task.Type, why)
			default:
				return reported{}, err
			}
		case activities.HasErrorType(err, activities.ErrTypeClaimLost):
			if claims.version != seen {
				continue // a new claim arrived while we were reporting
			}
			wctx := rctx
			if in.ClaimTimeout == 0 {
				// Started by a bridge older than claim_timeout (which
				// every later one sets): its code ended this wait at the
				// workflow's cancel, and its runs replay so.
				wctx = ctx
			}
			if !claims.waitChange(wctx, seen, opts.ClaimWait) {
				return reported{}, temporal.NewNonRetryableApplicationError(
					fmt.Sprintf("claim lost: task %s is held by another claim than %s (attempt %d), and no newer claim reached this workflow within %s",
						in.Task.ID, claim.WorkerID, claim.Attempts, opts.ClaimWait), activities.ErrTypeClaimLost, err)
			}
		default:
			return reported{}, err
		}
	}
}

// errorMessage is an activity error's own message, without the wrapping.
func errorMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	return err.Error()
}

// reported is what the report activity answered, the claim it used and
// the outcome it sent (a result TaskManager refused becomes a failure).
type reported struct {
	activities.ReportOutput
	ReportedWith Claim
	Sent         outcome
}

// runReport runs the completion activity; in local mode it first runs
// locally and, still failing after a minute, hands over to the regular
// activity, which retries without limit (reading the task first, since a
// local attempt may have posted).
func runReport(ctx workflow.Context, opts TypeOptions, in activities.ReportInput) workflow.Future {
	ao := reportOptions()
	ao.Summary = reportSummary(in.Success)
	actx := workflow.WithActivityOptions(ctx, ao)
	if !opts.IsLocal() {
		return workflow.ExecuteActivity(actx, activities.ReportActivityName, in)
	}
	f, settle := workflow.NewFuture(ctx)
	workflow.Go(ctx, func(gctx workflow.Context) {
		lo := localReportOptions()
		lo.Summary = ao.Summary
		lctx := workflow.WithLocalActivityOptions(gctx, lo)
		local := workflow.ExecuteLocalActivity(lctx, activities.ReportActivityName, in)
		if err := local.Get(gctx, nil); err == nil || activities.IsPermanent(err) {
			settle.Chain(local)
			return
		}
		in.ReadFirst = true
		settle.Chain(workflow.ExecuteActivity(actx, activities.ReportActivityName, in))
	})
	return f
}
