package workflows

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
)

// The constructs of a step beyond running a handler: when, for_each,
// on_failure, enqueue and wait_for. Each is taken only by a step that
// sets it, so runs of types without them issue the commands they always
// did.

// Defaults and bounds of the constructs.
const (
	// MaxForEachItems bounds a for_each list: each item is an activity in
	// the run's history, which Temporal caps at 51,200 events.
	MaxForEachItems = 1000
	// MaxForEachParamsBytes bounds the params a for_each step's items hand
	// their handlers, all together: each is written in the run's history,
	// which Temporal ends at 50 MiB (a step without params hands every
	// item the task's whole params).
	MaxForEachParamsBytes  = 20 << 20
	DefaultMaxParallel     = 10
	DefaultPollInterval    = time.Second
	DefaultMaxPollInterval = time.Minute
)

// step starts s, whatever its kind; its future settles once the step's
// result is recorded, it was skipped (when), or it failed for good (and
// its fallbacks, if any, failed too). extra are template names beyond
// .params and .steps (.error in a fallback).
func (p *pipeline) step(ctx workflow.Context, s Step, extra map[string]any) workflow.Future {
	var f workflow.Future
	if s.When != "" {
		run, err := p.when(ctx, s.When)
		switch {
		case err != nil:
			f = failedFuture(ctx, p.fail(s, err))
		case !run:
			p.skip(ctx, s)
			return doneFuture(ctx)
		}
	}
	switch {
	case f != nil: // when failed
	case len(s.Parallel) > 0:
		fut, settle := workflow.NewFuture(ctx)
		workflow.Go(ctx, func(c workflow.Context) {
			if err := p.runParallel(c, s.Parallel, extra); err != nil {
				settle.SetError(p.fail(s, err))
				return
			}
			settle.Set(nil, nil)
		})
		f = fut
	case s.ForEach != "":
		f = p.runForEach(ctx, s, extra)
	case s.Enqueue != nil:
		f = p.runEnqueue(ctx, s, extra)
	case s.WaitFor != nil:
		f = p.runWaitFor(ctx, s)
	default:
		f = p.runOne(ctx, s, extra)
	}
	if len(s.OnFailure) == 0 {
		return f
	}
	return p.withFallbacks(ctx, s, f)
}

// when evaluates a step's condition. Its value is recorded in history (a
// side effect): a run replays the branch it took, whatever a newer CEL
// library or a map's order would say.
func (p *pipeline) when(ctx workflow.Context, src string) (bool, error) {
	var out exprResult
	limit := p.exprLimit(ctx)
	err := workflow.SideEffect(ctx, func(workflow.Context) any {
		defer p.exprSpent(time.Now())
		v, err := evalBool(src, p.exprVars(), limit)
		return exprResult{Value: v, Err: errText(err)}
	}).Get(&out)
	if err == nil && out.Err != "" {
		err = errors.New(out.Err)
	}
	b, _ := out.Value.(bool)
	return b, err
}

// items evaluates a for_each list, recorded in history as when is.
func (p *pipeline) items(ctx workflow.Context, src string) ([]any, error) {
	// Items are read back as their JSON text, not as []any: a number
	// decoded into any is a float64, which would round a large integer.
	var out struct {
		Value []json.RawMessage `json:"value"`
		Err   string            `json:"err,omitempty"`
	}
	limit := p.exprLimit(ctx)
	err := workflow.SideEffect(ctx, func(workflow.Context) any {
		if v, ok := listAt(src, taskmanager.OrEmptyObject(p.in.Task.Params), p.results); ok {
			return exprResult{Value: v}
		}
		defer p.exprSpent(time.Now())
		v, err := evalList(src, p.exprVars(), limit)
		return exprResult{Value: v, Err: errText(err)}
	}).Get(&out)
	if err == nil && out.Err != "" {
		err = errors.New(out.Err)
	}
	items := make([]any, len(out.Value))
	for i, raw := range out.Value {
		items[i] = raw
	}
	return items, err
}

// exprResult is an expression's value, or why it has none.
type exprResult struct {
	Value any    `json:"value"`
	Err   string `json:"err,omitempty"`
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// skip counts a step whose when was false as done.
func (p *pipeline) skip(ctx workflow.Context, s Step) {
	p.count(s)
	p.showProgress(ctx)
}

// count counts as done the steps of s (s, or the members of its parallel
// group) not counted yet: a group that fails after some of its members
// succeeded adds only the others. A run older than changeProgressInHandlers
// counts as it did (a group's members again): its progress activities
// follow the count, and its history holds them.
func (p *pipeline) count(s Step) {
	if !p.inHandlers {
		p.done += countedSteps([]Step{s})
		return
	}
	if len(s.Parallel) > 0 {
		for _, m := range s.Parallel {
			p.count(m)
		}
		return
	}
	if !p.counted[s.Name] {
		p.counted[s.Name] = true
		p.done++
	}
}

// withFallbacks runs s's on_failure steps, in order, when f fails for
// good: s's entry becomes {"error": "…"} and the task goes on. A step
// cancelled with its group (a parallel sibling failed) gets no fallback.
func (p *pipeline) withFallbacks(ctx workflow.Context, s Step, f workflow.Future) workflow.Future {
	fut, settle := workflow.NewFuture(ctx)
	workflow.Go(ctx, func(c workflow.Context) {
		err := f.Get(c, nil)
		if err == nil || c.Err() != nil || isHistoryFull(err) || p.claims.over {
			// A full history, or a claim over, is not the step's to handle.
			settle.Set(nil, err)
			return
		}
		msg, ok := p.failures[s.Name]
		if !ok {
			msg = failureMessage(s.kind(), err)
		}
		entry, _ := json.Marshal(map[string]string{"error": msg})
		p.setResult(s.Name, entry)
		p.count(s) // handled: its fallbacks do not count
		p.showProgress(c)
		for _, fb := range s.OnFailure {
			// A fallback's templates and expressions get budgets of
			// their own: the step may have failed by spending those of
			// this workflow task (the deadlock the budgets prevent is a
			// coroutine's, between its yields, and this one yielded).
			p.freshBudgets(c)
			if err := p.step(c, fb, map[string]any{"error": msg}).Get(c, nil); err != nil {
				settle.SetError(err)
				return
			}
		}
		settle.Set(nil, nil)
	})
	return fut
}

// runForEach runs s's handler once per item of its for_each list, at
// most max_parallel at once; the result is the items' results in order.
// An item that fails for good fails the step and cancels the others.
func (p *pipeline) runForEach(ctx workflow.Context, s Step, extra map[string]any) workflow.Future {
	items, err := p.items(ctx, s.ForEach)
	if err == nil && len(items) > MaxForEachItems {
		err = fmt.Errorf("for_each gave %d items, over the %d a step runs (each is an activity in the run's history)", len(items), MaxForEachItems)
	}
	if err != nil {
		return failedFuture(ctx, p.fail(s, err))
	}
	fut, settle := workflow.NewFuture(ctx)
	workflow.Go(ctx, func(c workflow.Context) {
		results, err := p.forEachItem(c, s, items, extra)
		if err != nil {
			settle.SetError(p.fail(s, err))
			return
		}
		out, _ := json.Marshal(results)
		p.record(c, s, out)
		settle.Set(nil, nil)
	})
	return fut
}

func (p *pipeline) forEachItem(ctx workflow.Context, s Step, items []any, extra map[string]any) ([]json.RawMessage, error) {
	ictx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	results := make([]json.RawMessage, len(items))
	sel := workflow.NewSelector(ctx)
	var firstErr error
	next, running, paramsBytes := 0, 0, 0
	launch := func(i int) {
		data := maps.Clone(extra)
		if data == nil {
			data = map[string]any{}
		}
		raw, _ := json.Marshal(items[i]) // from JSON: encodes
		data["item"], _ = decodeJSON(raw)
		data["index"] = number(i)
		params, err := p.stepParams(ctx, s, data)
		if paramsBytes += len(params); err == nil && paramsBytes > MaxForEachParamsBytes &&
			workflow.GetVersion(ctx, changeForEachParamsBound, workflow.DefaultVersion, 1) == 1 {
			err = fmt.Errorf("items 0 to %d hand their handlers %d bytes of params, over the %d a run's history holds for a for_each step (give the step params that take only what an item needs)",
				i, paramsBytes, MaxForEachParamsBytes)
		}
		item := fmt.Sprintf("%s[%d]", s.Name, i)
		summary := stepSummary(item, s.Handler)
		var f workflow.Future
		var in activities.HandlerInput
		if err != nil {
			f = failedFuture(ictx, err)
		} else {
			in = p.handlerInput(s, params)
			in.Step = item
			if p.postsHere(s) {
				in.Progress = p.startProgress(item)
			}
			f = p.execute(ictx, s, summary, &in)
			p.started(ctx, item, summary)
		}
		running++
		var ended func(workflow.Future)
		ended = func(f workflow.Future) {
			herr := f.Get(ctx, &results[i])
			// A read that shows the task claimed past the run's claim may
			// wait here up to claim_wait for that claim's signal: no item
			// starts or ends meanwhile (they would start under a claim
			// that may be over).
			again, err := p.handlerEnded(ictx, in, herr)
			if again { // for a newer claim: the item keeps its place
				sel.AddFuture(p.rerun(ictx, s, summary, &in, false), ended)
				return
			}
			running--
			p.ended(ctx, item)
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("item %d: %s", i, failureMessage(s.Handler, err))
				if isHistoryFull(err) {
					firstErr = temporal.NewNonRetryableApplicationError(firstErr.Error(), HistoryFullErrorType, nil)
				}
				cancel()
			}
		}
		sel.AddFuture(f, ended)
	}
	limit := cmp.Or(s.MaxParallel, DefaultMaxParallel)
	for {
		for firstErr == nil && next < len(items) && running < limit {
			// Read before the room is weighed: the read's own events count.
			if p.guardClaim && p.claimOver(ictx, s.options(p.opts, !p.exact).IsLocal()) {
				firstErr = p.claimOverError()
				cancel() // the running items stop, as when one fails
				break
			}
			if len(p.landing) > 0 && !p.room(ctx, MaxStepParamsBytes, p.resultBound(s)) && p.guarded(ctx) {
				// Near the history's limit: the running handlers'
				// results first (see HistoryGuardBytes). Its own come
				// in through sel; others', in their steps' coroutines.
				if running > 0 {
					break
				}
				if err := p.awaitRoom(ctx, MaxStepParamsBytes, p.resultBound(s)); err != nil {
					firstErr = err
					break
				}
				if p.guardClaim {
					continue // read again, then weigh the room again
				}
			}
			launch(next)
			next++
		}
		if running == 0 {
			break
		}
		sel.Select(ctx)
	}
	return results, firstErr
}

// runEnqueue creates s's TaskManager task (once, however often the step is
// retried: the task's params name this run and step, and TaskManager
// deduplicates) and waits for it to end, reading it again and again with
// a backoff to max_poll_interval (awaitByRetries).
func (p *pipeline) runEnqueue(ctx workflow.Context, s Step, extra map[string]any) workflow.Future {
	e := s.Enqueue
	params, err := p.renderParams(ctx, e.Params, extra)
	if err == nil {
		// This run, step and claim: a new attempt of the task (TaskManager
		// re-queued it) makes its own child, a retried step does not.
		params, err = withParent(params, fmt.Sprintf("%s/%s@%d", workflow.GetInfo(ctx).WorkflowExecution.ID, s.Name, p.claims.current.Attempts))
	}
	if err != nil {
		return failedFuture(ctx, p.fail(s, err))
	}
	fut, settle := workflow.NewFuture(ctx)
	wait := func(c workflow.Context) {
		out, err := p.awaitTask(c, s, activities.EnqueueInput{Type: e.Type, Params: params})
		delete(p.landing, s.Name)
		if err != nil {
			settle.SetError(p.fail(s, err))
			return
		}
		p.record(c, s, out)
		settle.Set(nil, nil)
	}
	if workflow.GetVersion(ctx, changeGuardEnqueue, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		workflow.Go(ctx, wait)
		return fut
	}
	// Under the history guard as a step routed elsewhere: the task's
	// result, read back, may be as large as Temporal lets a payload be.
	p.whenRoom(ctx, s, len(params), maxPayloadBytes, settle, func(c workflow.Context) {
		if err := p.admit(c, s.Name, len(params), maxPayloadBytes); err != nil {
			settle.SetError(p.fail(s, err))
			return
		}
		workflow.Go(c, wait)
	})
	return fut
}

func (p *pipeline) awaitTask(ctx workflow.Context, s Step, in activities.EnqueueInput) (json.RawMessage, error) {
	e := s.Enqueue
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		// TaskManager down: retried without limit; a refused task (bad
		// params, unknown type) is not.
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: time.Minute},
		Summary:     stepSummary(s.Name, "enqueue "+e.Type),
	})
	if p.guardClaim && p.claimOver(ctx, false) {
		return nil, p.claimOverError() // no task created for a claim that is over
	}
	var created activities.EnqueueOutput
	if err := workflow.ExecuteActivity(actx, activities.EnqueueActivityName, in).Get(ctx, &created); err != nil {
		return nil, err
	}
	var deadline time.Time
	if e.Timeout > 0 {
		deadline = workflow.Now(ctx).Add(e.Timeout)
	}
	p.waiting(ctx, s.Name, fmt.Sprintf("step %s waits for TaskManager task %s (%s)", s.Name, created.TaskID, e.Type))
	defer p.waiting(ctx, s.Name, "")
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 30 * time.Second, ScheduleToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: 30 * time.Second},
		Summary:     stepSummary(s.Name, "read task "+created.TaskID),
	})
	// One change id per step: a run whose first wait began before the
	// upgrade still takes the new wait for its later enqueue steps.
	if workflow.GetVersion(ctx, changeAwaitByRetries+"/"+s.Name, workflow.DefaultVersion, 1) == 1 {
		return awaitByRetries(ctx, s, created.TaskID, deadline, lctx)
	}
	wait := cmp.Or(e.PollInterval, DefaultPollInterval)
	for {
		var st activities.TaskState
		err := workflow.ExecuteLocalActivity(lctx, activities.ReadTaskActivityName, created.TaskID).Get(ctx, &st)
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case activities.IsPermanent(err): // gone from TaskManager
			return nil, err
		case err != nil: // TaskManager unreachable for minutes: read again later
		case st.Status == taskmanager.StatusCompleted:
			return taskmanager.OrEmptyObject(st.Result), nil
		case st.Status == taskmanager.StatusFailed:
			return nil, fmt.Errorf("task %s (%s) failed: %s", created.TaskID, e.Type, cmp.Or(st.Error, "no message"))
		}
		sleepFor := wait
		if !deadline.IsZero() {
			left := deadline.Sub(workflow.Now(ctx))
			if left <= 0 {
				return nil, fmt.Errorf("task %s (%s) did not end within %s", created.TaskID, e.Type, e.Timeout)
			}
			sleepFor = min(wait, left) // a last read at the deadline
		}
		poll := workflow.NewTimerWithOptions(ctx, sleepFor, workflow.TimerOptions{Summary: stepSummary(s.Name, "wait for task "+created.TaskID)})
		if err := poll.Get(ctx, nil); err != nil {
			return nil, err
		}
		wait = min(2*wait, cmp.Or(e.MaxPollInterval, DefaultMaxPollInterval))
	}
}

// awaitByRetries waits for enqueued task id to end through one
// tmbridge.AwaitTask activity whose retries read the task, between
// backoffs from the step's poll_interval doubling to max_poll_interval:
// retries add no history event, so however long the wait, the run does
// not grow toward Temporal's history limit (changeAwaitByRetries; before,
// each read added a timer and a marker). With a timeout, a timer stops
// the reads at the deadline, and one last read decides. The reads take
// the worker's regular activity slots (max_concurrent_activities), as
// handlers do.
func awaitByRetries(ctx workflow.Context, s Step, id string, deadline time.Time, lctx workflow.Context) (json.RawMessage, error) {
	e := s.Enqueue
	longest := cmp.Or(e.MaxPollInterval, DefaultMaxPollInterval)
	actx, stop := workflow.WithCancel(ctx)
	defer stop()
	actx = workflow.WithActivityOptions(actx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			// max_poll_interval bounds every wait, the first one too.
			InitialInterval: min(cmp.Or(e.PollInterval, DefaultPollInterval), longest), BackoffCoefficient: 2,
			MaximumInterval: longest,
		},
		Summary: stepSummary(s.Name, "wait for task "+id),
	})
	f := workflow.ExecuteActivity(actx, activities.AwaitTaskActivityName, id)
	var st activities.TaskState
	var err error
	if deadline.IsZero() {
		err = f.Get(ctx, &st)
	} else {
		tctx, cancelTimer := workflow.WithCancel(ctx)
		defer cancelTimer()
		timer := workflow.NewTimerWithOptions(tctx, deadline.Sub(workflow.Now(ctx)), workflow.TimerOptions{Summary: stepSummary(s.Name, "timeout")})
		sel := workflow.NewSelector(ctx)
		sel.AddFuture(f, func(workflow.Future) {})
		sel.AddFuture(timer, func(workflow.Future) {})
		sel.Select(ctx)
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case f.IsReady():
			err = f.Get(ctx, &st)
		default: // the deadline: stop the reads, and read once more
			stop()
			err = workflow.ExecuteLocalActivity(lctx, activities.ReadTaskActivityName, id).Get(ctx, &st)
			if ctx.Err() == nil && !activities.IsPermanent(err) && (err != nil || (st.Status != taskmanager.StatusCompleted && st.Status != taskmanager.StatusFailed)) {
				return nil, fmt.Errorf("task %s (%s) did not end within %s", id, e.Type, e.Timeout)
			}
		}
	}
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case err != nil:
		return nil, err // gone from TaskManager
	case st.Status == taskmanager.StatusCompleted:
		return taskmanager.OrEmptyObject(st.Result), nil
	default:
		return nil, fmt.Errorf("task %s (%s) failed: %s", id, e.Type, cmp.Or(st.Error, "no message"))
	}
}

// withParent adds "_parent": parent to params, so that the task is this
// run's and step's own (TaskManager deduplicates on type and params).
func withParent(params json.RawMessage, parent string) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(params, &m); err != nil || m == nil {
		return nil, errors.New("enqueue.params: want a JSON object")
	}
	m["_parent"], _ = json.Marshal(parent)
	return json.Marshal(m)
}

// runWaitFor waits for s's signal; its payload (a JSON object; anything
// else becomes {"value": …}) is the step's result. A signal sent before
// the step is reached counts; past the timeout the step fails.
func (p *pipeline) runWaitFor(ctx workflow.Context, s Step) workflow.Future {
	w := s.WaitFor
	fut, settle := workflow.NewFuture(ctx)
	workflow.Go(ctx, func(c workflow.Context) {
		details := fmt.Sprintf("step %s waits for signal %q", s.Name, w.Signal)
		if w.Timeout > 0 {
			details += fmt.Sprintf(" until %s", workflow.Now(c).Add(w.Timeout).UTC().Format(time.RFC3339))
		}
		p.waiting(c, s.Name, details)
		defer p.waiting(c, s.Name, "")
		var payload json.RawMessage
		got, timedOut := false, false
		sel := workflow.NewSelector(c)
		sel.AddReceive(workflow.GetSignalChannel(c, w.Signal), func(ch workflow.ReceiveChannel, _ bool) {
			got = receiveSignal(c, ch, &payload)
		})
		sel.AddReceive(c.Done(), func(workflow.ReceiveChannel, bool) {})
		if w.Timeout > 0 {
			tctx, cancel := workflow.WithCancel(c)
			defer cancel()
			timer := workflow.NewTimerWithOptions(tctx, w.Timeout, workflow.TimerOptions{Summary: stepSummary(s.Name, "timeout")})
			sel.AddFuture(timer, func(workflow.Future) { timedOut = true })
		}
		for !got && !timedOut && c.Err() == nil { // a signal that did not decode was dropped
			sel.Select(c)
		}
		switch {
		case got:
			p.record(c, s, asObject(payload))
			settle.Set(nil, nil)
		case c.Err() != nil:
			settle.SetError(p.fail(s, c.Err()))
		case timedOut:
			settle.SetError(p.fail(s, fmt.Errorf("no signal %q came within %s", w.Signal, w.Timeout)))
		}
	})
	return fut
}

// asObject is raw as a result: a JSON object ({"value": …} for another
// value, {} for none or a payload that is not JSON).
func asObject(raw json.RawMessage) json.RawMessage {
	obj, err := taskmanager.AsObject(raw)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return obj
}

// waiting sets what step name waits for ("": nothing), shown in the run's
// current details (Temporal Web).
func (p *pipeline) waiting(ctx workflow.Context, name, what string) {
	if what == "" {
		delete(p.waits, name)
	} else {
		p.waits[name] = what
	}
	p.showProgress(ctx)
}

// record keeps a step's result and reports the progress made.
func (p *pipeline) record(ctx workflow.Context, s Step, out json.RawMessage) {
	p.setResult(s.Name, out)
	if p.fallbacks[s.Name] {
		return // a fallback's step counted when it failed
	}
	p.count(s)
	if p.inHandlers && p.alone[s.Name] && p.postsHere(s) {
		p.shown = max(p.shown, p.percent()) // its handler posted it (doneProgress)
	}
	p.showProgress(ctx)
	if !p.inHandlers {
		p.reportProgress(ctx, fmt.Sprintf("step %s done (%d/%d)", s.Name, p.done, p.total))
	}
}

// countedSteps counts the steps that make the task's progress: every step
// that runs something, fallbacks aside.
func countedSteps(steps []Step) int {
	n := 0
	for _, s := range steps {
		if len(s.Parallel) > 0 {
			n += countedSteps(s.Parallel)
		} else {
			n++
		}
	}
	return n
}

// fail records why s failed for good (its fallbacks' .error) and returns
// the step's error.
func (p *pipeline) fail(s Step, err error) error {
	msg := failureMessage(cmp.Or(s.Handler, s.Name), err)
	p.failures[s.Name] = msg
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("step %s (%s): %s", s.Name, s.kind(), msg), StepFailedErrorType, err)
}

// kind names what a step runs, for messages: its handler, or the construct.
func (s Step) kind() string {
	switch {
	case s.Handler != "":
		return s.Handler
	case s.Enqueue != nil:
		return "enqueue " + s.Enqueue.Type
	case s.WaitFor != nil:
		return "wait_for " + s.WaitFor.Signal
	default:
		return "parallel"
	}
}

// exprVars are the variables of an expression: the params and each
// result decoded once (CEL reads them, never changes them), not once per
// expression.
func (p *pipeline) exprVars() map[string]any {
	if p.exprParams == nil {
		p.exprParams = exprJSON(taskmanager.OrEmptyObject(p.in.Task.Params)) // checked by runSteps
	}
	steps := make(map[string]any, len(p.results))
	for name, raw := range p.results {
		v, ok := p.exprDecoded[name]
		if !ok {
			v = exprJSON(raw)
			p.exprDecoded[name] = v
		}
		steps[name] = v
	}
	return map[string]any{"params": p.exprParams, "steps": steps}
}

// exprLimit is how long the next expression may take: at most
// exprTimeout, and what is left of exprTaskBudget in this workflow task
// (workflow.Now tells one from the next). Only the first execution of a
// workflow task evaluates (a replay reads the side effects), so only it
// spends.
func (p *pipeline) exprLimit(ctx workflow.Context) time.Duration {
	if now := workflow.Now(ctx); !now.Equal(p.exprAt) {
		p.exprAt, p.exprLeft = now, exprTaskBudget
	}
	return min(exprTimeout, p.exprLeft)
}

// freshBudgets gives the next templates and expressions full budgets.
func (p *pipeline) freshBudgets(ctx workflow.Context) {
	p.work, p.workAt = &workBudget{left: maxTemplateWork}, workflow.Now(ctx)
	p.exprAt, p.exprLeft = workflow.Now(ctx), exprTaskBudget
}

// exprSpent takes the time since start from this workflow task's time
// for expressions.
func (p *pipeline) exprSpent(start time.Time) { p.exprLeft -= time.Since(start) }

func failedFuture(ctx workflow.Context, err error) workflow.Future {
	f, settle := workflow.NewFuture(ctx)
	settle.SetError(err)
	return f
}

func doneFuture(ctx workflow.Context) workflow.Future {
	f, settle := workflow.NewFuture(ctx)
	settle.Set(nil, nil)
	return f
}
