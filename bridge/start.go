package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// Search attribute keys, set where the namespace has them.
var (
	taskTypeKey = temporal.NewSearchAttributeKeyKeyword(SearchAttrTaskType)
	taskIDKey   = temporal.NewSearchAttributeKeyKeyword(SearchAttrTaskID)
)

// MaxStartBytes bounds a workflow's encoded input: Temporal refuses larger
// payloads (its default blob size limit is 2 MiB), so a task whose params
// are larger is failed in TaskManager instead of started.
const MaxStartBytes = 2_000_000

// MaxParamsDepth bounds how deeply a task's params nest: deeper JSON is
// no one's real input, and every decoder on the way (the handler's, the
// templates') would walk it. Such a task is failed, not started. (The
// handlers' decoding in package activities has the same bound.)
const MaxParamsDepth = 100

// startInputSlack is what a workflow input may add to its task's params
// (the task's fields, the claim, the type's options) before it is measured.
const startInputSlack = 64 << 10

// WorkflowID returns the workflow id of a task.
func (b *Bridge) WorkflowID(taskID taskmanager.ID) string {
	return b.cfg.Temporal.WorkflowIDPrefix + string(taskID)
}

// runState is what became of a claim's start.
type runState int

const (
	runNone runState = iota // no run serves the claim yet
	runOpen                 // a run serves it (started, signalled, or found)
	runDone                 // a run served it and has closed, or the claim is over
)

// startTask starts the workflow of a claimed task in the background and
// ends its ticket: opened (then watched until it closes), dropped when the
// claim's run already closed, or failed in TaskManager when Temporal can
// never start it. claimedAt is when this bridge made the claim; zero for a
// claim found again (a sweep), whose run is then looked for first.
// claimSpan is the claim's trace span (telemetry.go), if any.
func (b *Bridge) startTask(tk *ticket, task taskmanager.Task, t servedType, claimedAt time.Time, claimSpan trace.SpanContext) {
	b.starts.Add(1)
	go func() {
		defer b.starts.Done()
		id := b.WorkflowID(task.ID)
		span := traceStart(claimSpan, task, id)
		state, err := b.startWorkflow(task, t, claimedAt, span.SpanContext())
		endStart(span, state, err)
		var permanent *startError
		switch {
		case errors.As(err, &permanent):
			tk.fail()
			b.log.Warn("task cannot be started in Temporal: failing it in TaskManager", "task_id", string(task.ID), "task_type", t.Name, "err", err)
			b.failTask(tk, task, claimedAt, permanent.Error(), true)
		case err != nil:
			tk.dropped()
			b.log.Warn("task claimed but its workflow could not be started before shutdown; the next start of this worker recovers it",
				"task_id", string(task.ID), "task_type", t.Name, "err", err)
		case state == runDone:
			tk.dropped()
			b.log.Info("no run needed: this claim's run already closed, or the claim is over", "task_id", string(task.ID), "task_type", t.Name, "workflow_id", id)
		default:
			if tk.opened(id, int(task.Attempts), claimedAt) {
				b.watchRun(id)
			}
			b.renewAt(id, task.ID, t.Name, claimedAt, int(task.Attempts))
		}
	}()
}

// renewAt wakes the claim loop of typ when the claim with attempts made at
// claimedAt times out while its run is still open: TaskManager hands the
// task out again, and this bridge claims it first (the new claim goes to
// the open run, as any claim of a running task does), rather than another
// worker. It wakes the loop renewMargin after the timeout, then again
// every renewEvery, renewTries times, until a newer claim of this worker
// reached the run (that claim arms its own timer) or the run closed. An
// older claim whose start ended after a newer one's arms nothing. Once
// its tries are spent (every loop of the type busy, max_in_flight
// reached), the claim is left to the scout, as a claim seen expired.
func (b *Bridge) renewAt(workflowID string, taskID taskmanager.ID, typ string, claimedAt time.Time, attempts int) {
	if claimedAt.IsZero() {
		return
	}
	var tries atomic.Int32
	var timer *time.Timer
	// Armed once timer is set: the callback may run at once (a start that
	// took longer than the claim timeout).
	timer = time.AfterFunc(time.Hour, func() {
		if b.bg.Err() != nil || !b.adm.isOpen(workflowID) || b.adm.attempts(workflowID) > attempts {
			return
		}
		if b.adm.hasRoom() { // else a woken loop would wait, and claim later whatever there is
			b.scout.wake(typ, 1)
		}
		if tries.Add(1) <= renewTries {
			timer.Reset(renewEvery)
			return
		}
		if b.adm.renewalSpent(workflowID, attempts) {
			b.scout.seenSince(taskID, attempts, claimedAt)
		}
	})
	timer.Reset(time.Until(claimedAt.Add(b.cfg.ClaimTimeout)) + renewMargin)
	b.adm.onClose(workflowID, attempts, func() { timer.Stop() }) // no timer outlives its run or its claim
}

// Renewal timing. PHP stores claimed_at in whole seconds and hands a task
// out again once its claim is strictly older than the timeout in whole
// seconds: up to a second after the timeout. The margin covers that and a
// little clock skew between the hosts; the tries cover more skew, and a
// wake lost while every loop of the type was busy.
const (
	renewMargin = 1500 * time.Millisecond
	renewEvery  = 2 * time.Second
	renewTries  = 5
)

// startError is a start Temporal will never accept: the task is failed.
type startError struct{ reason string }

func (e *startError) Error() string {
	return "tmbridge could not start a Temporal workflow for this task: " + e.reason
}

// startWorkflow starts the task's workflow (a re-queued task gets a new run
// under the same id) or, when a run is still open (the task was claimed
// again), signals the new claim to it: a task never runs twice at once.
//
// A start whose answer was lost may have created the run, and the run may
// even have closed already: before any retry (and first for a claim found
// again, or not its task's first: startTry.look) the latest run is looked
// up, and a run whose memo names this claim counts as this claim's run. It retries until the start succeeds, the error is
// permanent (*startError), or the bridge stops. Its Temporal calls are made
// under span, so that the workflow's trace continues it.
//
// A claim that is not its task's first (attempts > 1) is checked first
// too: an earlier claim's run may be open, and if it is this worker's, its
// report, posted with the same worker id, may land on this claim and end
// it. An open run is signalled by its run id, never replaced by a new run
// while it closes (the run itself then tells whether its post ended the
// claim); when the latest run was this worker's and has closed, the task
// is read before a run is started, so the read sees whatever its report
// posted. A claim found again, and any retry, read the task before they
// start or signal anything (tryStart).
func (b *Bridge) startWorkflow(task taskmanager.Task, t servedType, claimedAt time.Time, span trace.SpanContext) (runState, error) {
	id := b.WorkflowID(task.ID)
	in := b.cfg.TaskInput(task, t.Options, claimedAt)
	opts := b.startOptions(task, id)
	tried := false // a start (or signal) was sent: a later try may find its run
	for failures := 0; ; failures++ {
		if failures > 0 {
			sleep(b.bg, backoff(failures))
		}
		if b.bg.Err() != nil {
			return runNone, b.bg.Err()
		}
		ctx, cancel := context.WithTimeout(withSpan(b.bg, span), 10*time.Second)
		try := startTry{
			look:  claimedAt.IsZero() || task.Attempts > 1 || failures > 0,
			read:  claimedAt.IsZero() || failures > 0,
			fresh: !claimedAt.IsZero(),
		}
		b.tryStart(ctx, &try, task, opts, in)
		cancel()
		tried = tried || try.sent
		if try.err == nil {
			// Counted when started or signalled now, or by an earlier try
			// whose answer was lost (its run found now); not for a run
			// found open already (a claim found again by a sweep), nor for
			// a claim that is over.
			if try.sent || (try.found && tried) {
				b.metrics.started.WithLabelValues(task.Type).Inc()
				if !claimedAt.IsZero() {
					b.metrics.startDuration.WithLabelValues(task.Type).Observe(time.Since(claimedAt).Seconds())
				}
			}
			return try.state, nil
		}
		if err := b.startFailed(try.err, task, id); err != nil {
			return runNone, err
		}
	}
}

// startOptions are the options of a task's workflow start.
func (b *Bridge) startOptions(task taskmanager.Task, id string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                                       id,
		TaskQueue:                                b.cfg.Temporal.TaskQueue,
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		Memo: map[string]any{
			workflows.MemoTaskID: string(task.ID), workflows.MemoTaskType: task.Type,
			workflows.MemoAttempt: int(task.Attempts), workflows.MemoWorkerID: b.cfg.WorkerID,
		},
		StaticSummary: fmt.Sprintf("%s · task %s · attempt %d", task.Type, task.ID, task.Attempts),
		StaticDetails: taskLink(b.cfg.APIURL, task.ID),
		// The run's first workflow task comes back with the start's answer
		// to this process's worker (Temporal falls back to the task queue
		// when it cannot): one round trip less per task, and with local
		// activities the whole run in one workflow task.
		EnableEagerStart: true,
	}
}

// startTry is one try of startWorkflow: what it looks at first, and what
// came of it.
type startTry struct {
	look  bool // look at the task's latest run first
	read  bool // with look: read the task before starting, whoever ran last
	fresh bool // this process made the claim (its answer was read)

	state runState
	found bool  // a run names this claim
	sent  bool  // a start or signal was sent
	err   error // retried, unless *startError or the bridge stops
}

// tryStart makes one try: with look, the task's latest run is looked at
// first, and a run that names this claim is this claim's run. Else, when
// read is set or the latest run, closed, was this worker's (its report
// may have ended this claim), the task is read: nothing is started or
// signalled unless the claim still holds it. An open run of another claim
// then takes this one, signalled by its run id (a run closing meanwhile
// is not replaced: this is tried again); else a run is started.
func (b *Bridge) tryStart(ctx context.Context, try *startTry, task taskmanager.Task, opts client.StartWorkflowOptions, in workflows.TaskInput) {
	claim := in.Claim
	if try.look {
		var other otherRun
		try.state, other, try.err = b.claimRun(ctx, opts.ID, claim)
		try.found = try.err == nil && try.state != runNone
		if try.err != nil || try.state != runNone {
			return
		}
		if try.read || other.mine {
			try.state, try.err = b.claimHolds(ctx, task)
			if try.err != nil && try.fresh && undecodableAnswer(try.err) {
				// This process read the claim's answer; the task's read
				// does not decode. Started as a first claim is, unread:
				// else it would wait for a read that never comes.
				b.log.Warn("the claimed task's read does not decode: its run is started without it", "task_id", string(task.ID), "attempts", int(task.Attempts), "err", try.err)
				try.state, try.err = runNone, nil
			}
			if try.err != nil || try.state != runNone {
				return
			}
		}
		if other.open != "" {
			try.sent = true
			if try.err = b.signalClaim(ctx, opts.ID, other.open, claim); try.err == nil {
				try.state = runOpen
			}
			return
		}
	}
	opts.TypedSearchAttributes = temporal.SearchAttributes{}
	if b.searchAttrs.Load() {
		opts.TypedSearchAttributes = temporal.NewSearchAttributes(taskTypeKey.ValueSet(task.Type), taskIDKey.ValueSet(string(task.ID)))
	}
	try.sent = true
	try.err = b.startOrSignal(ctx, opts.ID, claim, opts, in)
	try.state = runOpen
}

// startFailed says what a try's error means: nil to try again (logged),
// else the error startWorkflow returns (a *startError, or the bridge
// stops).
func (b *Bridge) startFailed(err error, task taskmanager.Task, id string) error {
	var permanent *startError
	if errors.As(err, &permanent) {
		return permanent
	}
	if b.bg.Err() != nil {
		return err
	}
	if missingSearchAttributes(err) && b.searchAttrs.CompareAndSwap(true, false) {
		b.log.Warn("the namespace no longer has the search attributes TaskType and TaskID: runs start without them until the next start of this bridge (tmbridge setup adds them)", "err", err)
		return nil
	}
	if refusedBridge(err) {
		b.log.Error("Temporal refuses this bridge's starts (permission denied): check the role of its Temporal credentials; the task stays claimed and its start is retried", "task_id", string(task.ID), "task_type", task.Type, "workflow_id", id, "err", err)
		return nil
	}
	if temporalUnreachable(err) && b.gate.shut() {
		b.log.Warn("Temporal is unreachable: claiming paused until it answers", "err", err)
		go b.probeTemporal()
	}
	b.log.Warn("cannot start workflow; retrying", "task_id", string(task.ID), "task_type", task.Type, "workflow_id", id, "err", err)
	return nil
}

// taskLink is a run's static details in Temporal Web: a markdown link to
// its task in TaskManager's API. The API URL is shown as RedactURL shows
// it, without the userinfo or query where secrets travel.
func taskLink(apiURL string, id taskmanager.ID) string {
	u := strings.TrimRight(taskmanager.RedactURL(apiURL), "/") + "/tasks/" + url.PathEscape(string(id))
	return fmt.Sprintf("TaskManager task [%s](%s)", id, u)
}

// inputSize is the encoded size of a workflow input.
func inputSize(in workflows.TaskInput) int {
	p, err := converter.GetDefaultDataConverter().ToPayload(in)
	if err != nil {
		return 0
	}
	return len(p.GetData())
}

// undecodableAnswer reports whether err is TaskManager's 2xx answer that
// did not decode.
func undecodableAnswer(err error) bool {
	var e *taskmanager.Error
	return errors.As(err, &e) && e.Status >= 200 && e.Status < 300
}

// otherRun is the latest run of a task when it serves another claim.
type otherRun struct {
	open string // its run id, when it is open
	mine bool   // closed, it served a claim of this worker
}

// claimRun looks at the latest run of id: runOpen or runDone when its memo
// names this claim, runNone otherwise (no run, or a run of another claim:
// other says which).
func (b *Bridge) claimRun(ctx context.Context, id string, claim workflows.Claim) (runState, otherRun, error) {
	desc, err := b.runs.DescribeWorkflowExecution(ctx, id, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return runNone, otherRun{}, nil
	}
	if err != nil {
		return runNone, otherRun{}, err
	}
	info := desc.GetWorkflowExecutionInfo()
	running := info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	if m := workflows.ClaimInMemo(info.GetMemo()); m.Attempts != claim.Attempts || m.WorkerID != claim.WorkerID {
		if running {
			return runNone, otherRun{open: info.GetExecution().GetRunId()}, nil
		}
		return runNone, otherRun{mine: m.WorkerID == claim.WorkerID}, nil
	}
	if running {
		return runOpen, otherRun{}, nil
	}
	return runDone, otherRun{}, nil
}

// claimHolds reads the task: runNone while this claim still holds it (a
// run must be started), runDone when it no longer does (nothing to start).
func (b *Bridge) claimHolds(ctx context.Context, task taskmanager.Task) (runState, error) {
	t, err := b.api.GetTask(ctx, task.ID)
	if errors.Is(err, taskmanager.ErrNotFound) {
		b.log.Warn("the claimed task is gone from TaskManager (deleted): no run started for it", "task_id", string(task.ID))
		return runDone, nil
	}
	if err != nil {
		return runNone, &apiError{err}
	}
	if t.HeldBy(b.cfg.WorkerID, int(task.Attempts)) {
		return runNone, nil
	}
	b.log.Info("the claim no longer holds the task: no run started for it", "task_id", string(task.ID), "attempts", int(task.Attempts), "status", t.Status)
	return runDone, nil
}

// startOrSignal starts the workflow, the common case, without a signal
// event; only when a run is open does it signal the claim to that run.
func (b *Bridge) startOrSignal(ctx context.Context, id string, claim workflows.Claim, opts client.StartWorkflowOptions, in workflows.TaskInput) error {
	if refused := unstartable(in); refused != nil {
		// A run of this task may be open all the same (started before the
		// bound existed): it takes the claim. Else the task is failed.
		err := b.runs.SignalWorkflow(ctx, id, "", workflows.ClaimSignalName, claim)
		var gone *serviceerror.NotFound
		if errors.As(err, &gone) {
			return refused
		}
		return err
	}
	_, err := b.runs.ExecuteWorkflow(ctx, opts, workflows.TaskWorkflowName, in)
	if missingSearchAttributes(err) || refusedBridge(err) {
		return err // the bridge's fault, not the task's: retried
	}
	if permanentStartError(err) {
		return &startError{err.Error()} // the start itself is refused: the task's fault
	}
	var running *serviceerror.WorkflowExecutionAlreadyStarted
	if !errors.As(err, &running) {
		return err
	}
	return b.signalClaim(ctx, id, running.RunId, claim)
}

// signalClaim hands a new claim of the task to its open run runID. A run
// that closed meanwhile is an error: the start is tried again.
func (b *Bridge) signalClaim(ctx context.Context, id, runID string, claim workflows.Claim) error {
	if err := b.runs.SignalWorkflow(ctx, id, runID, workflows.ClaimSignalName, claim); err != nil {
		var gone *serviceerror.NotFound
		if errors.As(err, &gone) {
			return fmt.Errorf("run %s closed before the new claim reached it: %w", runID, err) // retried: it starts anew
		}
		return err
	}
	b.log.Info("task claimed again while its workflow runs: new claim signalled", "workflow_id", id, "attempts", claim.Attempts)
	return nil
}

// permanentStartError reports whether Temporal will never accept this
// start, whatever the retries: the request itself is refused.
func permanentStartError(err error) bool {
	var invalid *serviceerror.InvalidArgument
	return errors.As(err, &invalid) || status.Code(err) == codes.InvalidArgument
}

// refusedBridge reports a start refused for want of permission: the fault
// of the bridge's Temporal credentials, the same for every task, so the
// task keeps its claim and the start is retried (failing it would fail
// the whole queue while the credentials are wrong).
func refusedBridge(err error) bool {
	var denied *serviceerror.PermissionDenied
	return errors.As(err, &denied) || status.Code(err) == codes.PermissionDenied
}

// missingSearchAttributes reports a start refused because the namespace
// does not know the search attributes it sets (they were removed after
// the bridge started): the namespace's fault, not the task's.
func missingSearchAttributes(err error) bool {
	return permanentStartError(err) && strings.Contains(strings.ToLower(err.Error()), "search attribute")
}

// apiError is the error of a TaskManager call made while starting a run:
// it says nothing of whether Temporal answers.
type apiError struct{ err error }

func (e *apiError) Error() string { return "TaskManager: " + e.err.Error() }
func (e *apiError) Unwrap() error { return e.err }

// temporalUnreachable reports an error of a Temporal call that says
// Temporal does not answer (not a slow TaskManager's timeout).
func temporalUnreachable(err error) bool {
	var api *apiError
	return !errors.As(err, &api) && unreachable(err)
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
		_, err := b.runs.CheckHealth(ctx, &client.CheckHealthRequest{})
		cancel()
		if err == nil {
			b.log.Info("Temporal answers again: claiming resumes")
			b.gate.reopen()
			return
		}
		sleep(b.bg, backoff(failures))
	}
}

// failTask reports a task no run can serve as failed, with reason, under
// the report rule (read first when the claim, sent at claimedAt, may have
// timed out, or a post may have landed; post only for this claim),
// retrying until TaskManager has it or the bridge stops; then it drops
// the ticket. A
// message TaskManager refuses (too large, invalid) is cut, then replaced
// by a short one: the task must not stay claimed. A task the bridge
// cannot read (readable false) is never read: its post is retried while it
// surely did not land; once an answer is lost, the sweep looks at the task
// again (a second blind post could end a newer claim of this worker).
func (b *Bridge) failTask(tk *ticket, task taskmanager.Task, claimedAt time.Time, reason string, readable bool) {
	report := activities.Report
	if !readable {
		report = activities.ReportUnread
	}
	b.starts.Add(1)
	go func() {
		defer b.starts.Done()
		defer tk.dropped()
		in := activities.ReportInput{TaskID: string(task.ID), WorkerID: b.cfg.WorkerID, Attempt: int(task.Attempts), Error: reason}
		for failures := 1; b.bg.Err() == nil; failures++ {
			// A claim of unknown age, or old enough to have timed out and
			// been handed out again (to this worker id, whose post would
			// end that newer claim), is read first, as the report activity
			// does (ReadFirstFrom).
			in.ReadFirst = in.ReadFirst || claimedAt.IsZero() || time.Since(claimedAt) >= b.cfg.ClaimTimeout/2
			out, err := report(b.bg, b.api, in)
			b.metrics.observeReport(err)
			in.ReadFirst = true // that post may have landed: read first from now on
			switch {
			case err == nil:
				b.log.Info("task failed in TaskManager", "task_id", string(task.ID), "status", out.Status, "reason", in.Error)
				return
			case activities.HasErrorType(err, activities.ErrTypePayloadTooLarge), activities.HasErrorType(err, activities.ErrTypeRejected):
				if len(in.Error) > 1024 {
					in.Error = strings.ToValidUTF8(in.Error[:1024], "")
				} else {
					in.Error = "tmbridge could not start a Temporal workflow for this task"
				}
			case activities.HasErrorType(err, activities.ErrTypeUncertain):
				b.log.Warn("the failure's answer was lost: the sweep looks at the task again", "task_id", string(task.ID), "err", err)
				b.requestSweep()
				return
			case activities.IsPermanent(err):
				b.log.Warn("cannot fail the task in TaskManager: its claim is gone", "task_id", string(task.ID), "err", err)
				return
			}
			wait := max(backoff(failures), retryDelay(err))
			b.log.Warn("cannot fail the task in TaskManager yet; retrying (it stays claimed meanwhile)", "task_id", string(task.ID), "err", err, "retry_in", wait.Round(time.Millisecond))
			sleep(b.bg, wait)
		}
	}()
}

// retryDelay is the delay a retryable application error asks for.
func retryDelay(err error) time.Duration {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.NextRetryDelay()
	}
	return 0
}

// unstartable returns why Temporal could never start a run with input in:
// params nested too deeply, or an input over its payload limit.
func unstartable(in workflows.TaskInput) *startError {
	if d := jsonDepth(in.Task.Params); d > MaxParamsDepth {
		return &startError{fmt.Sprintf("its params nest %d levels deep, over the %d accepted", d, MaxParamsDepth)}
	}
	// Params are most of the input: encode it to measure only when they
	// come near the limit (not on every start).
	if len(in.Task.Params) > MaxStartBytes-startInputSlack {
		if n := inputSize(in); n > MaxStartBytes {
			return &startError{fmt.Sprintf("its input is %d bytes, over the %d bytes Temporal accepts in one payload", n, MaxStartBytes)}
		}
	}
	return nil
}

// jsonDepth is how deeply raw's arrays and objects nest (0 for a scalar).
func jsonDepth(raw []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, c := range raw {
		switch {
		case escaped:
			escaped = false
		case inString:
			escaped = c == '\\'
			inString = c != '"'
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}
