package workflows

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"

	"cel.dev/cel-go/cel"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/internal/valid"
	"github.com/prismq/tmbridge/taskmanager"
)

// Step is one step of a multi-step task type. It is one of: a handler run
// as its own activity (Handler), a group of steps run at once (Parallel),
// a TaskManager task for another worker (Enqueue), or a wait for a signal
// (WaitFor); When, ForEach and OnFailure apply to any. In config:
//
//	steps:
//	  - name: shout
//	    handler: example.uppercase
//	  - name: count
//	    when: "size(steps.shout.uppercase) > 3"
//	    handler: example.echo
//	    params: { message: "{{ .steps.shout.uppercase }}" }
//	  - parallel:
//	      - { name: a, handler: example.math.add, params: { a: 1, b: 2 } }
//	      - { name: b, handler: example.sleep, params: { duration: 1 } }
type Step struct {
	// Name keys the step's result in the task's result and in templates.
	// Default: the handler name.
	Name string `json:"name,omitempty" koanf:"name"`
	// Handler is the activity to run (a registered task type handler).
	Handler string `json:"handler,omitempty" koanf:"handler"`
	// Params are the step's params; nil passes the task's params. String
	// values are templates over .params (the task's) and .steps (earlier
	// results by name): "{{ .steps.shout.uppercase }}"; .item and .index
	// in a for_each step, .error in an on_failure step. A string that is
	// one template action keeps the value's JSON type.
	Params map[string]any `json:"params,omitempty" koanf:"params"`
	// Parallel runs these steps at once instead of Handler.
	Parallel []Step `json:"parallel,omitempty" koanf:"parallel"`
	// When is a CEL expression over params and steps; false skips the
	// step, which then has no entry in the task's result.
	When string `json:"when,omitempty" koanf:"when"`
	// ForEach is a CEL expression giving a list: the step's handler runs
	// once per item, at most MaxParallel at once, and its result is the
	// list of the items' results in item order.
	ForEach string `json:"for_each,omitempty" koanf:"for_each"`
	// MaxParallel bounds the items of ForEach run at once. Default 10.
	MaxParallel int `json:"max_parallel,omitempty" koanf:"max_parallel"`
	// OnFailure are steps run when this one fails for good; the task then
	// goes on. The failed step's result is {"error": "…"}.
	OnFailure []Step `json:"on_failure,omitempty" koanf:"on_failure"`
	// Enqueue creates a TaskManager task for another worker and waits for
	// it to end; its result is the step's.
	Enqueue *Enqueue `json:"enqueue,omitempty" koanf:"enqueue"`
	// WaitFor waits for a Temporal signal; its payload is the step's result.
	WaitFor *WaitFor `json:"wait_for,omitempty" koanf:"wait_for"`
	// ActivityOptions override the task type's for this step; unset
	// fields take the type's. On a parallel group they are its steps'
	// defaults (over the type's); its on_failure steps take the type's.
	ActivityOptions `koanf:",squash"`
}

// Enqueue is a step done by another worker: a TaskManager task of Type.
type Enqueue struct {
	// Type is the task type to create (registered in TaskManager).
	Type string `json:"type" koanf:"type"`
	// Params are the task's params, templates as a step's. A "_parent" key
	// naming this run, step and attempt ("<workflow id>/<step>@<attempt>")
	// is added: TaskManager deduplicates tasks on type and params, so a
	// retried step finds its own task again, two parents never share one,
	// and a new attempt of the parent task makes a new child.
	Params map[string]any `json:"params,omitempty" koanf:"params"`
	// PollInterval is the first wait between two reads of the task; each
	// wait doubles, up to MaxPollInterval. Defaults 1s and 1m.
	PollInterval    time.Duration `json:"poll_interval,omitempty" koanf:"poll_interval"`
	MaxPollInterval time.Duration `json:"max_poll_interval,omitempty" koanf:"max_poll_interval"`
	// Timeout fails the step when the task has not ended by then; 0: none.
	Timeout time.Duration `json:"timeout,omitempty" koanf:"timeout"`
}

// WaitFor is a step that waits for a signal sent to the task's run (from
// Temporal Web's "Send a Signal" or `temporal workflow signal`).
type WaitFor struct {
	// Signal is the signal's name. A signal sent before the step is
	// reached counts.
	Signal string `json:"signal" koanf:"signal"`
	// Timeout fails the step when no signal came by then; 0: none.
	Timeout time.Duration `json:"timeout,omitempty" koanf:"timeout"`
}

// StepFailedErrorType is the error type of a step that failed for good.
const StepFailedErrorType = "StepFailed"

// name is the step's name: Name, or its handler's.
func (s Step) name() string {
	if s.Name == "" {
		return s.Handler
	}
	return s.Name
}

// scope is what a step's templates and expressions may read: the steps
// before it (before), among every step of the type (all); fallback marks
// an on_failure step, whose templates also see .error.
type scope struct {
	before, all map[string]bool
	fallback    bool
}

// validate checks a step in its scope. Each error starts with the key's
// path in the step.
func (s Step) validate(sc scope) []error {
	before, all := sc.before, sc.all
	kinds := 0
	for _, set := range []bool{s.Handler != "", len(s.Parallel) > 0, s.Enqueue != nil, s.WaitFor != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds == 0:
		return []error{errors.New("handler: a step needs a handler, parallel, enqueue or wait_for")}
	case kinds > 1:
		return []error{errors.New("handler: set one of handler, parallel, enqueue and wait_for")}
	case s.Name == "" && (s.Enqueue != nil || s.WaitFor != nil || len(s.OnFailure) > 0):
		return []error{errors.New("name: an enqueue, wait_for or on_failure step needs a name (its result's key)")}
	}
	errs := s.ActivityOptions.validate()
	if len(s.Parallel) > 0 && s.Params != nil {
		errs = append(errs, errors.New("params: a parallel group has none: set them on its steps"))
	}
	if s.Enqueue != nil || s.WaitFor != nil {
		if s.Params != nil {
			errs = append(errs, errors.New("params: an enqueue step's params are enqueue.params; a wait_for step has none"))
		}
		if o := s.ActivityOptions; o.TaskQueue != "" || o.Local != nil || o.StartToCloseTimeout != 0 || o.ScheduleToCloseTimeout != 0 || o.HeartbeatTimeout != 0 || !o.Retry.isZero() {
			errs = append(errs, errors.New("retry: task_queue, local, timeouts and retry are for handler steps (enqueue and wait_for have their own timeout)"))
		}
	}
	add := func(prefix string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s%w", prefix, err))
		}
	}
	// Templates of this step see the steps before it, and .item/.index or
	// .error where they apply.
	roots := []string{"params", "steps"}
	if s.When != "" {
		add("when: ", checkExpr(s.When, cel.BoolType, before, all))
	}
	if s.ForEach != "" {
		add("for_each: ", checkExpr(s.ForEach, cel.ListType(cel.DynType), before, all))
		if s.Handler == "" {
			add("", errors.New("for_each: runs a handler per item: set handler"))
		}
		roots = append(roots, "item", "index")
	}
	if s.MaxParallel != 0 {
		add("", valid.Range("max_parallel", s.MaxParallel, 1, 1000))
		if s.ForEach == "" {
			add("", errors.New("max_parallel: applies to for_each only"))
		}
	}
	if sc.fallback {
		roots = append(roots, "error")
	}
	add("", checkTemplates("params", s.Params, roots, before, all))
	if e := s.Enqueue; e != nil {
		if strings.TrimSpace(e.Type) == "" {
			add("", errors.New("enqueue.type: name the task type to create"))
		}
		add("enqueue.", checkTemplates("params", e.Params, roots, before, all))
		add("", valid.RangeOrZero("enqueue.poll_interval", e.PollInterval, 100*time.Millisecond, valid.Day))
		add("", valid.RangeOrZero("enqueue.max_poll_interval", e.MaxPollInterval, 100*time.Millisecond, valid.Day))
		add("", valid.RangeOrZero("enqueue.timeout", e.Timeout, time.Second, 365*valid.Day))
	}
	if w := s.WaitFor; w != nil {
		switch {
		case strings.TrimSpace(w.Signal) == "":
			add("", errors.New("wait_for.signal: name the signal to wait for"))
		case w.Signal == ClaimSignalName:
			add("", fmt.Errorf("wait_for.signal: %q is the bridge's own signal", w.Signal))
		}
		add("", valid.RangeOrZero("wait_for.timeout", w.Timeout, time.Second, 365*valid.Day))
	}
	for i, p := range s.Parallel {
		for _, err := range p.validate(sc) {
			errs = append(errs, fmt.Errorf("parallel[%d].%w", i, err))
		}
	}
	// Fallbacks see the steps before this one, and each other in order.
	fb := scope{before: maps.Clone(before), all: all, fallback: true}
	fb.before[s.name()] = true // its {"error": …} entry
	for i, f := range s.OnFailure {
		for _, err := range f.validate(fb) {
			errs = append(errs, fmt.Errorf("on_failure[%d].%w", i, err))
		}
		for _, l := range named([]Step{f}) {
			fb.before[l.name()] = true
		}
	}
	return errs
}

// markGroupFallbacks marks the on_failure steps of parallel groups, at any
// depth, in fallbacks.
func markGroupFallbacks(steps []Step, fallbacks map[string]bool) {
	for _, s := range steps {
		if len(s.Parallel) > 0 {
			for _, f := range leaves(s.OnFailure) {
				fallbacks[f.Name] = true
			}
			markGroupFallbacks(s.Parallel, fallbacks)
		}
		markGroupFallbacks(s.OnFailure, fallbacks)
	}
}

// leaves returns the steps that run something (all but parallel groups) in
// order, parallel groups flattened and fallbacks after their step.
func leaves(steps []Step) []Step {
	var out []Step
	for _, s := range steps {
		if len(s.Parallel) > 0 {
			out = append(out, leaves(s.Parallel)...)
		} else {
			out = append(out, s)
		}
		out = append(out, leaves(s.OnFailure)...)
	}
	return out
}

// options returns how a step runs: its options as the bridge resolved
// them (resolveSteps). A run started before steps were resolved in the
// bridge (legacy) merges them as it did then: a step's retry replaced its
// type's, unset fields taking the defaults.
func (s Step) options(parent TypeOptions, legacy bool) ActivityOptions {
	if !legacy {
		return s.ActivityOptions.over(parent.ActivityOptions)
	}
	o := parent.ActivityOptions
	if s.TaskQueue != "" {
		o.TaskQueue, o.Local = s.TaskQueue, Bool(false)
	}
	o.Local = cmp.Or(s.Local, o.Local)
	o.StartToCloseTimeout = cmp.Or(s.StartToCloseTimeout, o.StartToCloseTimeout)
	o.ScheduleToCloseTimeout = cmp.Or(s.ScheduleToCloseTimeout, o.ScheduleToCloseTimeout)
	o.HeartbeatTimeout = cmp.Or(s.HeartbeatTimeout, o.HeartbeatTimeout)
	if !s.Retry.isZero() {
		o.Retry = s.Retry.over(defaultActivityOptions.Retry)
	}
	return o
}

// pipeline runs a task's steps, collecting their results by name.
type pipeline struct {
	in      TaskInput
	opts    TypeOptions
	claims  *claimState
	params  any
	exact   bool // templates render as template.go says (else as template_legacy.go)
	results map[string]json.RawMessage
	decoded map[string]any // results as templates see them, decoded once
	// exprParams and exprDecoded are the params and results as
	// expressions see them, decoded once; exprAt is the workflow task
	// whose expressions have exprLeft of exprTaskBudget left.
	exprParams  any
	exprDecoded map[string]any
	exprAt      time.Time
	exprLeft    time.Duration
	// work is what the renders of the workflow task at workAt may still
	// do (templateWork).
	work   *workBudget
	workAt time.Time
	// failures are the messages of the steps that failed for good, by
	// name: their fallbacks' .error.
	failures  map[string]string
	fallbacks map[string]bool   // names of on_failure steps
	waits     map[string]string // what each waiting step waits for
	running   map[string]string // the summary of each step running, by name
	// alone are the steps that run by themselves: top-level handler steps
	// without for_each. Their handler knows the progress its completion
	// makes.
	alone map[string]bool
	// inHandlers: the steps' handlers post the task's progress
	// (changeProgressInHandlers); shown is the highest progress handed
	// to them. Older runs post it with the progress activity: poster
	// carries it to one poster, in order (runs with exact templates;
	// older ones post inline).
	inHandlers bool
	// waitCancel: a step's handler activity that a cancel stops (the run's
	// or its group's) is waited for before the run goes on
	// (version stepsWaitCancel of changeProgressInHandlers).
	waitCancel bool
	// guardClaim: a step starts only after a read shows the claim holds,
	// when it may not (version stepsGuardClaim; claimOver); guardAt is the
	// history length where the last read's answer came; reading: a read
	// is under way (steps starting meanwhile wait for its answer).
	guardClaim bool
	guardAt    int
	reading    bool
	// readAgainAt: a claim that may have expired is read again from then
	// on, after a read that found it holding (claimOver).
	readAgainAt time.Time
	// readOnRetry: a step's handler on the bridge's own worker reads the
	// task before a retried attempt (version stepsReadOnRetry, for runs
	// that ask: TaskInput.ReadOnRetry), and a read that showed the claim
	// over ends the steps (handlerEnded).
	readOnRetry bool
	shown       int
	poster      workflow.Channel
	posted      workflow.Future
	done        int
	counted     map[string]bool // the steps done counts, by name
	total       int
	// seenAt is the history length of the workflow task the handlers
	// scheduled in it (unseen bytes of params) are not yet counted in.
	seenAt, unseen int
	// landing is the largest result each handler running may land, by
	// step (or item) name (resultBound).
	landing map[string]int
}

// runSteps runs a task's steps. It returns their results by name and, on
// success, the task's last progress for the report to post (nil when a
// step posted it, or the run is older than changeProgressInHandlers).
func runSteps(ctx workflow.Context, in TaskInput, opts TypeOptions, claims *claimState) (json.RawMessage, *activities.Progress, error) {
	p := &pipeline{in: in, opts: opts, claims: claims, results: map[string]json.RawMessage{}, decoded: map[string]any{}, exprDecoded: map[string]any{}, failures: map[string]string{},
		fallbacks: map[string]bool{}, waits: map[string]string{}, running: map[string]string{}, landing: map[string]int{}, alone: map[string]bool{}, counted: map[string]bool{},
		total: countedSteps(opts.Steps)}
	p.exact = workflow.GetVersion(ctx, changeExactTemplates, workflow.DefaultVersion, 1) == 1
	if p.exact {
		v := workflow.GetVersion(ctx, changeProgressInHandlers, workflow.DefaultVersion, stepsReadOnRetry)
		p.inHandlers, p.waitCancel, p.guardClaim = v >= 1, v >= stepsWaitCancel, v >= stepsGuardClaim
		p.readOnRetry = in.ReadOnRetry && v >= stepsReadOnRetry
	}
	claims.noteCancel = p.waitCancel
	for _, s := range leaves(opts.Steps) {
		for _, f := range leaves(s.OnFailure) {
			p.fallbacks[f.Name] = true
		}
	}
	if p.inHandlers {
		// A parallel group's on_failure steps are fallbacks too (leaves
		// leaves the group out). Only where handlers post progress: an
		// older run posts one progress activity per step counted.
		markGroupFallbacks(opts.Steps, p.fallbacks)
	}
	for _, s := range opts.Steps {
		if s.Handler != "" && s.ForEach == "" {
			p.alone[s.Name] = true
		}
	}
	p.showProgress(ctx)
	_ = workflow.SetQueryHandler(ctx, ProgressQueryName, func() (StepProgress, error) { return p.stepProgress(), nil })
	if p.exact && !p.inHandlers {
		p.startPoster(ctx)
	}
	err := p.run(ctx)
	if p.poster != nil {
		p.flushPoster(ctx) // the last progress before the report
	}
	if err != nil {
		return nil, nil, err
	}
	out, err := json.Marshal(p.results)
	return out, p.finalProgress(), err
}

// run runs the steps in order; the first that fails for good ends it.
func (p *pipeline) run(ctx workflow.Context) error {
	params, err := p.decode(taskmanager.OrEmptyObject(p.in.Task.Params))
	if err != nil {
		return temporal.NewNonRetryableApplicationError("task params are not JSON: "+err.Error(), activities.ErrTypeInvalidParams, err)
	}
	p.params = params
	for _, s := range p.opts.Steps {
		var err error
		if len(s.Parallel) > 0 && s.When == "" && len(s.OnFailure) == 0 {
			err = p.runParallel(ctx, s.Parallel, nil)
		} else {
			err = p.step(ctx, s, nil).Get(ctx, nil)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// runOne starts one handler step; its future settles once the result is
// recorded (or with the step's failure).
func (p *pipeline) runOne(ctx workflow.Context, s Step, extra map[string]any) workflow.Future {
	future, settle := workflow.NewFuture(ctx)
	params, err := p.stepParams(ctx, s, extra)
	if err != nil {
		settle.SetError(p.fail(s, err))
		return future
	}
	// Read before the room is weighed: the read's own events count.
	if p.guardClaim && p.claimOver(ctx, s.options(p.opts, !p.exact).IsLocal()) {
		settle.SetError(p.fail(s, p.claimOverError()))
		return future
	}
	p.whenRoom(ctx, s, len(params), p.resultBound(s), settle, func(c workflow.Context) { p.startOne(c, s, params, settle) })
	return future
}

// whenRoom calls start once a step with params bytes of params and a
// result of up to bound bytes may start: at once, or, in a parallel group
// near the history's limit, once the running steps' results are in (see
// HistoryGuardBytes), and not at all if its group fails meanwhile (settle
// then has s's failure). Its siblings start (or wait) meanwhile: the
// group sees a failure at once.
func (p *pipeline) whenRoom(ctx workflow.Context, s Step, params, bound int, settle workflow.Settable, start func(workflow.Context)) {
	if len(p.landing) == 0 || p.room(ctx, params, bound) || !p.guarded(ctx) {
		start(ctx)
		return
	}
	workflow.Go(ctx, func(c workflow.Context) {
		for {
			if err := p.awaitRoom(c, params, bound); err != nil {
				settle.SetError(p.fail(s, err))
				return
			}
			if !p.guardClaim {
				break
			}
			// Read before the room is weighed again: the read's events
			// count. An enqueue step's task is created by a regular
			// activity, whatever the type's local.
			if p.claimOver(c, s.Enqueue == nil && s.options(p.opts, !p.exact).IsLocal()) {
				settle.SetError(p.fail(s, p.claimOverError()))
				return
			}
			if len(p.landing) == 0 || p.room(c, params, bound) {
				break
			}
		}
		start(c)
	})
}

// startOne starts handler step s with params; settle settles runOne's
// future once its result is recorded (or with the step's failure).
func (p *pipeline) startOne(ctx workflow.Context, s Step, params json.RawMessage, settle workflow.Settable) {
	in := p.handlerInput(s, params)
	if p.postsHere(s) {
		in.Progress, in.ProgressDone = p.startProgress(s.Name), p.doneProgress(s)
	}
	summary := stepSummary(s.Name, s.Handler)
	f := p.execute(ctx, s, summary, &in)
	p.started(ctx, s.Name, summary)
	workflow.Go(ctx, func(gctx workflow.Context) {
		var out json.RawMessage
		again, err := p.handlerEnded(gctx, in, f.Get(gctx, &out))
		for again { // for a newer claim
			f = p.rerun(gctx, s, summary, &in, true)
			again, err = p.handlerEnded(gctx, in, f.Get(gctx, &out))
		}
		p.ended(gctx, s.Name)
		if err != nil {
			settle.SetError(p.fail(s, err))
			return
		}
		p.record(gctx, s, out)
		settle.Set(nil, nil)
	})
}

// execute schedules step s's handler activity with in, which it completes
// (the claim, the read on retry); with waitCancel, a cancel of it is
// waited for (ActivityOptions.executeHandler). Its error goes through
// handlerEnded.
func (p *pipeline) execute(ctx workflow.Context, s Step, summary string, in *activities.HandlerInput) workflow.Future {
	o := s.options(p.opts, !p.exact)
	if p.guardClaim {
		if p.claimOver(ctx, o.IsLocal()) {
			return failedFuture(ctx, p.claimOverError())
		}
		// The read may have taken a newer claim (a renewal).
		in.Attempt, in.WorkerID = p.claims.current.Attempts, p.claims.current.WorkerID
	}
	// A handler routed to another task queue runs on a worker that may not
	// read (readsOnRetry).
	in.ReadOnRetry = p.readOnRetry && o.TaskQueue == ""
	// A local step scheduled in a replay runs again when it has no
	// marker: the bridge that ran it may have died after the task was
	// reported, its workflow task completed by its heartbeat while the
	// step ran (the history length is then the first's, and the guard
	// does not read). The step's activity reads first instead: an input
	// changes no command.
	in.ReadFirst = in.ReadOnRetry && o.IsLocal() && workflow.IsReplaying(ctx)
	if o.IsLocal() {
		in.RunToken = heldRun(ctx)
	}
	if err := p.admit(ctx, in.Step, len(in.Params), p.resultBound(s)); err != nil {
		return failedFuture(ctx, err)
	}
	if p.waitCancel {
		return o.executeHandler(ctx, summary, s.Handler, *in)
	}
	return o.execute(ctx, summary, s.Handler, *in)
}

// rerun executes step s again for a newer claim (handlerEnded): the
// attempt that found the claim over lands nothing, so its room in the
// history is given back first. With wait, it waits once for room while
// other steps run (a step about to start weighs it again after the read
// before it: whenRoom); a for_each item does not wait (its siblings'
// results come in through the selector its rerun is decided in). Without
// room, the step fails HistoryFull.
func (p *pipeline) rerun(ctx workflow.Context, s Step, summary string, in *activities.HandlerInput, wait bool) workflow.Future {
	delete(p.landing, in.Step)
	bound := p.resultBound(s)
	if wait && len(p.landing) > 0 && !p.room(ctx, len(in.Params), bound) && p.guarded(ctx) {
		if err := p.awaitRoom(ctx, len(in.Params), bound); err != nil {
			return failedFuture(ctx, err)
		}
	}
	return p.execute(ctx, s, summary, in)
}

// handlerEnded is err, the end of a step's handler activity scheduled with
// in, unless it is the read of a retried attempt that found in's claim
// over (claimSeenIn), and ran no handler. Then, when a newer claim reached
// the run that the read did not show over (ClaimSeen.MayHold: another
// bridge claimed the task, and the run serves its claim now), again: the
// step runs again for it (execute takes the run's current claim), as a
// step that starts after the guard's read does. A read that shows the
// task claimed past the run's current claim waits up to claim_wait for
// that claim's signal (its bridge's may be on its way), as the guard
// does (claimOver). Else the claim is judged over (claimState.judgeOver):
// a ClaimLost failure, no step starts after it, and the run reports
// nothing, or continues as new for a newer claim that may hold, one that
// came while a cancelled step waited say (TaskWorkflow). A step whose
// context is cancelled does not run again.
func (p *pipeline) handlerEnded(ctx workflow.Context, in activities.HandlerInput, err error) (again bool, _ error) {
	seen, ok := claimSeenIn(err)
	if !ok || !in.ReadOnRetry {
		return false, err
	}
	mine := Claim{WorkerID: in.WorkerID, Attempts: in.Attempt}
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	for {
		p.claims.drain(ctx)
		c := p.claims.current
		if !c.same(mine) && seen.MayHold(c.WorkerID, c.Attempts) && !p.claims.over && ctx.Err() == nil {
			workflow.GetLogger(ctx).Info("a step's claim was over, and a newer claim reached the run: the step runs again for it", "task_id", p.in.Task.ID, "step", in.Step, "claim", c)
			return true, nil
		}
		past := seen.Status == taskmanager.StatusClaimed && seen.Attempts > c.Attempts
		if p.claims.over || ctx.Err() != nil || !past || !p.awaitClaim(dctx) {
			break
		}
	}
	p.claims.judgeOver(mine, "when a step's handler was to run again", &seen)
	return false, temporal.NewNonRetryableApplicationError(errorMessage(err), activities.ErrTypeClaimLost, nil)
}

// claimOver reports whether the run's claim is over, reading the task
// (readClaim) before a step starts when it may be: the claim is older
// than half the claim timeout (or of unknown age), so it may have timed
// out and gone to another worker; or a local step (local) starts past
// the run's first workflow task, which may be a bridge taking over a run
// whose first workflow task reported the outcome and never completed.
// A task claimed again since (by this bridge's renewal or another
// worker, whose signal may be on its way) is waited for, up to
// claim_wait, as the report waits: the newer claim that comes is read
// again, and its steps go on. Steps that start in one workflow task
// share one read. A claim of known age that may have expired is read
// again only a tenth of the claim timeout after a read found it holding
// (a long for_each would double its history otherwise), but from a tenth
// before its timeout on at every workflow task, as one of unknown age
// is. Once over, the claim stays over (claimState.over) and no step
// starts. A step whose context is cancelled does not start anyway: it
// reads nothing.
func (p *pipeline) claimOver(ctx workflow.Context, local bool) bool {
	if p.reading {
		_ = workflow.Await(ctx, func() bool { return !p.reading })
	}
	if ctx.Err() != nil {
		return p.claims.over
	}
	length := workflow.GetInfo(ctx).GetCurrentHistoryLength()
	if p.claims.over || length == p.guardAt {
		return p.claims.over
	}
	rerun := local && length > firstTaskEvents
	if !rerun && (!p.in.mayHaveExpired(ctx, p.claims.current) || workflow.Now(ctx).Before(p.readAgainAt)) {
		return false
	}
	p.reading = true
	defer func() { p.reading = false }()
	for {
		over, past := readClaim(ctx, p.in.Task.ID, "before a step", p.claims)
		if over && past {
			// The signal may reach the run's main coroutine, which applies
			// it (its selector receives first), or wait in the channel.
			dctx, _ := workflow.NewDisconnectedContext(ctx)
			if p.awaitClaim(dctx) {
				p.claims.drain(dctx)
				continue // a newer claim came: is it the task's?
			}
		}
		if over {
			// The read judged the run's current claim.
			p.claims.judgeOver(p.claims.current, "before a step started", nil)
		}
		p.guardAt = workflow.GetInfo(ctx).GetCurrentHistoryLength()
		// Past a tenth before its timeout, or of unknown age, the claim may
		// be taken by another worker any moment: every workflow task reads.
		p.readAgainAt = time.Time{}
		if c := p.claims.current; !c.ClaimedAt.IsZero() {
			p.readAgainAt = minTime(workflow.Now(ctx).Add(p.in.claimTimeout()/10), c.ClaimedAt.Add(p.in.claimTimeout()*9/10))
		}
		return p.claims.over
	}
}

// awaitClaim waits up to claim_wait for a newer claim: one the run's main
// coroutine applied (its selector receives signals first), or one waiting
// in the channel. Its timer is cancelled when one comes (AwaitWithTimeout
// leaves it running: a TimerFired event later).
func (p *pipeline) awaitClaim(ctx workflow.Context) bool {
	seen := p.claims.version
	tctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	timer := workflow.NewTimer(tctx, p.opts.ClaimWait)
	came := func() bool { return p.claims.version != seen || p.claims.ch.Len() > 0 }
	_ = workflow.Await(ctx, func() bool { return came() || timer.IsReady() })
	return came()
}

// minTime is the earlier of a and b.
func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// claimOverError is the failure of a step not started for a claim that
// is over: the run ends without a report (TaskWorkflow).
func (p *pipeline) claimOverError() error {
	c := p.claims.current
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("not started: the claim (%q, attempt %d) is over", c.WorkerID, c.Attempts), activities.ErrTypeClaimLost, nil)
}

// Temporal ends a run, unreported, whose history passes 51,200 events or
// 50 MiB (its default limits). A handler step, for_each item or enqueue
// step starts only while the history, with every running one's result at
// its largest (activities.MaxResultBytes for a handler whose result this
// bridge's worker bounds, else, and for an enqueue step, Temporal's
// payload limit)
// and the params scheduled since, stays under
// HistoryGuardBytes, and under HistoryGuardEvents: what is left is room
// for the report. Else a for_each or a parallel group waits for running
// handlers' results; with none running, the step fails for good
// (HistoryFullErrorType, which on_failure does not catch) and the task is
// reported failed.
const (
	HistoryGuardEvents = 40_960
	HistoryGuardBytes  = 48 << 20
)

// HistoryFullErrorType is the error type of a step not started for want
// of room in the run's history.
const HistoryFullErrorType = "tmbridge.HistoryFull"

// maxPayloadBytes is Temporal's default bound on one payload (its blob
// size limit): a handler on another task queue, whose worker the bridge
// does not bound, returns at most that.
const maxPayloadBytes = 2 << 20

// resultBound is the largest result s's handler may land in the history:
// activities.MaxResultBytes on this bridge's queue, Temporal's payload
// limit on another.
func (p *pipeline) resultBound(s Step) int {
	if p.postsHere(s) {
		return activities.MaxResultBytes
	}
	return maxPayloadBytes
}

// room reports whether a handler with params bytes of params and results
// of up to bound bytes may start (see HistoryGuardBytes).
func (p *pipeline) room(ctx workflow.Context, params, bound int) bool {
	info := workflow.GetInfo(ctx)
	events, size := info.GetCurrentHistoryLength(), info.GetCurrentHistorySize()
	if events != p.seenAt { // a new workflow task: its size counts what was scheduled before
		p.seenAt, p.unseen = events, 0
	}
	landing := bound
	for _, b := range p.landing {
		landing += b
	}
	return events < HistoryGuardEvents && size+p.unseen+params+landing < HistoryGuardBytes
}

// admit counts step (or item) name as running, with params bytes of
// params and a result of up to bound bytes, until ended; or, without room
// (in a run under the guard), fails it with historyFull.
func (p *pipeline) admit(ctx workflow.Context, name string, params, bound int) error {
	if !p.room(ctx, params, bound) && p.guarded(ctx) {
		return p.historyFull(ctx)
	}
	p.unseen += params
	p.landing[name] = bound
	return nil
}

// awaitRoom waits until a handler with params and results of up to bound
// bytes may start, or no handler runs (then execute fails it), or ctx
// ends (its error).
func (p *pipeline) awaitRoom(ctx workflow.Context, params, bound int) error {
	return workflow.Await(ctx, func() bool { return len(p.landing) == 0 || p.room(ctx, params, bound) })
}

// guarded reports whether the run keeps its history under the guard
// (changeHistoryGuard): asked only when there is no room, so that runs
// that never lack it record nothing.
func (p *pipeline) guarded(ctx workflow.Context) bool {
	return workflow.GetVersion(ctx, changeHistoryGuard, workflow.DefaultVersion, 1) == 1
}

// historyFull is the failure of a step not started for want of room.
func (p *pipeline) historyFull(ctx workflow.Context) error {
	info := workflow.GetInfo(ctx)
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"not started: the run's history holds %d events and %d bytes; with the results of the %d steps running, it could pass the limits past which Temporal ends a run (51,200 events, 50 MiB by default); give the task fewer steps or items, or smaller params and results",
		info.GetCurrentHistoryLength(), info.GetCurrentHistorySize(), len(p.landing)), HistoryFullErrorType, nil)
}

// isHistoryFull reports whether err, or an error it wraps, is a step not
// started for want of room in the run's history.
func isHistoryFull(err error) bool {
	for {
		var ae *temporal.ApplicationError
		if !errors.As(err, &ae) {
			return false
		}
		if ae.Type() == HistoryFullErrorType {
			return true
		}
		err = ae.Unwrap()
	}
}

// handlerInput is what a step's handler gets. Its own progress reaches
// Temporal (heartbeat details) but not TaskManager, where the steps done
// are the task's progress (progress.go): it never goes back.
func (p *pipeline) handlerInput(s Step, params json.RawMessage) activities.HandlerInput {
	return activities.HandlerInput{
		TaskID: p.in.Task.ID, TaskType: p.in.Task.Type, Params: params,
		Attempt: p.claims.current.Attempts, WorkerID: p.claims.current.WorkerID,
		Step: s.Name,
	}
}

// runParallel runs a group at once; the first step that fails for good
// cancels the others and fails the group.
func (p *pipeline) runParallel(ctx workflow.Context, group []Step, extra map[string]any) error {
	gctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	sel := workflow.NewSelector(ctx)
	var firstErr error
	pending := 0
	for _, s := range group {
		f := p.step(gctx, s, extra)
		pending++
		sel.AddFuture(f, func(f workflow.Future) {
			pending--
			if err := f.Get(ctx, nil); err != nil && firstErr == nil {
				firstErr = err
				cancel()
			}
		})
	}
	for pending > 0 && firstErr == nil {
		sel.Select(ctx)
	}
	for p.waitCancel && pending > 0 {
		sel.Select(ctx) // the cancelled steps stop first
	}
	return firstErr
}

// stepParams are a step's params: the task's, or its own rendered.
func (p *pipeline) stepParams(ctx workflow.Context, s Step, extra map[string]any) (json.RawMessage, error) {
	if s.Params == nil {
		return taskmanager.OrEmptyObject(p.in.Task.Params), nil
	}
	return p.renderParams(ctx, s.Params, extra)
}

// setResult sets the entry of a step in .steps.
func (p *pipeline) setResult(name string, raw json.RawMessage) {
	p.results[name] = raw
	delete(p.decoded, name)
	delete(p.exprDecoded, name)
}

// renderParams renders params' templates over .params, .steps and extra.
// Each result is decoded once, not once per render: a for_each renders
// once per item, in one workflow task.
func (p *pipeline) renderParams(ctx workflow.Context, params map[string]any, extra map[string]any) (json.RawMessage, error) {
	steps := make(map[string]any, len(p.results))
	for name, raw := range p.results {
		v, ok := p.decoded[name]
		if !ok {
			v, _ = p.decode(taskmanager.OrEmptyObject(raw)) // a handler's result is JSON
			p.decoded[name] = v
		}
		steps[name] = v
	}
	data := map[string]any{"params": p.params, "steps": steps}
	maps.Copy(data, extra)
	if !p.exact {
		rendered, err := legacyRender(params, data)
		if err != nil {
			return nil, err
		}
		return json.Marshal(rendered)
	}
	renderAll := func(work *workBudget, max int) (any, error) {
		rendered, err := renderMax(params, data, work, max)
		if err != nil {
			// An empty object PHP handed back as [] fails `index .x "key"`:
			// where a template fails, it is rendered again with empty lists
			// read as empty objects (changePHPEmptyObjects, taken only when
			// that makes it render).
			if again, err2 := renderTolerant(params, data, work, max); err2 == nil &&
				workflow.GetVersion(ctx, changePHPEmptyObjects, workflow.DefaultVersion, 1) == 1 {
				rendered, err = again, nil
			}
		}
		return rendered, err
	}
	work := p.templateWork(ctx)
	rendered, err := renderAll(work, MaxStepParamsBytes)
	if err == nil { // the marshal below is work too
		err = work.spend(costByte * valueBytes(rendered, work.left/costByte+1))
	}
	if work.left < 0 {
		// Passed in the render, in the tolerant one (whatever error the
		// first gave), or in the marshal.
		if workflow.GetVersion(ctx, changeTemplateWork, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
			// A run started before the bound renders as it did.
			rendered, err = renderAll(nil, MaxStepParamsBytes)
		} else if !errors.Is(err, errTemplateWork) {
			err = errTemplateWork // the tolerant render's, or the marshal's
		}
	}
	if errors.Is(err, errRenderTooBig) && workflow.GetVersion(ctx, changeBoundedRender, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		// A run started before the bound renders in full, and its params'
		// size is counted as it was (a for_each adds a failed item's).
		if r, err2 := renderAll(nil, math.MaxInt); err2 == nil {
			rendered, err = r, nil
		}
	}
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(rendered)
	if err == nil && len(out) > MaxStepParamsBytes {
		err = fmt.Errorf("rendered params are %d bytes, over the %d a step accepts", len(out), MaxStepParamsBytes)
	}
	return out, err
}

// templateWork is the work budget of this workflow task's renders
// (workflow.Now tells one workflow task from the next; renders happen in
// the same order in a replay, so a replay spends as the run did).
func (p *pipeline) templateWork(ctx workflow.Context) *workBudget {
	if now := workflow.Now(ctx); !now.Equal(p.workAt) {
		p.workAt, p.work = now, &workBudget{left: maxTemplateWork}
	}
	return p.work
}

// MaxStepParamsBytes bounds a step's rendered params: templates can repeat
// a large param, and Temporal refuses an activity input over its 2 MiB
// payload limit.
const MaxStepParamsBytes = 1_900_000

func (p *pipeline) decode(raw []byte) (any, error) {
	if p.exact {
		return decodeJSON(raw)
	}
	return legacyDecode(raw)
}
