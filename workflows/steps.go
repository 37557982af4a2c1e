package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge/taskmanager"
)

// Step is one step of a multi-step task type: a handler run as its own
// activity, or a group of steps run at once (Parallel). In config:
//
//	steps:
//	  - name: shout
//	    handler: example.uppercase
//	  - name: count
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
	// results by name): "{{ .steps.shout.uppercase }}". A string that is
	// one template action keeps the value's JSON type.
	Params map[string]any `json:"params,omitempty" koanf:"params"`
	// Parallel runs these steps at once instead of Handler.
	Parallel []Step `json:"parallel,omitempty" koanf:"parallel"`
	// ActivityOptions override the task type's for this step; unset
	// fields take the type's.
	ActivityOptions `koanf:",squash"`
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

// withDefaults names an unnamed step after its handler.
func (s Step) withDefaults() Step {
	s.Name = s.name()
	s.Parallel = slices.Clone(s.Parallel) // never write into the caller's slice
	for i := range s.Parallel {
		s.Parallel[i] = s.Parallel[i].withDefaults()
	}
	return s
}

// validate checks a step; before holds the names of the steps that run
// before it, all every step name of the type.
func (s Step) validate(before, all map[string]bool) []error {
	switch {
	case s.Handler == "" && len(s.Parallel) == 0:
		return []error{errors.New("handler: a step needs a handler or a parallel group")}
	case s.Handler != "" && len(s.Parallel) > 0:
		return []error{errors.New("parallel: set handler or parallel, not both")}
	}
	errs := s.ActivityOptions.validate()
	for i, p := range s.Parallel {
		for _, err := range p.validate(before, all) {
			errs = append(errs, fmt.Errorf("parallel[%d].%w", i, err))
		}
	}
	if err := checkTemplates(s.Params, before, all); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// Leaves returns the handler steps in order, parallel groups flattened.
func Leaves(steps []Step) []Step {
	var out []Step
	for _, s := range steps {
		if len(s.Parallel) > 0 {
			out = append(out, Leaves(s.Parallel)...)
		} else {
			out = append(out, s)
		}
	}
	return out
}

// options returns how a step runs: its own options over its type's.
func (s Step) options(parent TypeOptions) ActivityOptions {
	return s.ActivityOptions.over(parent.ActivityOptions)
}

// pipeline runs a task's steps, collecting their results by name.
type pipeline struct {
	in      TaskInput
	opts    TypeOptions
	claims  *claimState
	params  any
	exact   bool // templates render as template.go says (else as template_legacy.go)
	results map[string]json.RawMessage
	done    int
	total   int
}

func runSteps(ctx workflow.Context, in TaskInput, opts TypeOptions, claims *claimState) (json.RawMessage, error) {
	p := &pipeline{in: in, opts: opts, claims: claims, results: map[string]json.RawMessage{}, total: len(Leaves(opts.Steps))}
	p.exact = workflow.GetVersion(ctx, changeExactTemplates, workflow.DefaultVersion, 1) == 1
	params, err := p.decode(taskmanager.OrEmptyObject(in.Task.Params))
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError("task params are not JSON: "+err.Error(), activities.ErrTypeInvalidParams, err)
	}
	p.params = params
	for _, s := range opts.Steps {
		var err error
		if len(s.Parallel) > 0 {
			err = p.runParallel(ctx, s.Parallel)
		} else {
			err = p.runOne(ctx, s).Get(ctx, nil)
		}
		if err != nil {
			return nil, err
		}
	}
	return json.Marshal(p.results)
}

// runOne starts one handler step; its future settles once the result is
// recorded (or with the step's failure).
func (p *pipeline) runOne(ctx workflow.Context, s Step) workflow.Future {
	future, settle := workflow.NewFuture(ctx)
	params, err := p.stepParams(s)
	if err != nil {
		settle.SetError(stepError(s, err))
		return future
	}
	input := activities.HandlerInput{
		TaskID: p.in.Task.ID, TaskType: p.in.Task.Type, Params: params,
		Attempt: p.claims.current.Attempts, WorkerID: p.claims.current.WorkerID,
	}
	f := s.options(p.opts).execute(ctx, s.Handler, input)
	workflow.Go(ctx, func(gctx workflow.Context) {
		var out json.RawMessage
		if err := f.Get(gctx, &out); err != nil {
			settle.SetError(stepError(s, err))
			return
		}
		p.results[s.Name] = out
		p.done++
		p.reportProgress(gctx, fmt.Sprintf("step %s done (%d/%d)", s.Name, p.done, p.total))
		settle.Set(nil, nil)
	})
	return future
}

// runParallel runs a group at once; the first step that fails for good
// cancels the others and fails the group.
func (p *pipeline) runParallel(ctx workflow.Context, group []Step) error {
	gctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	sel := workflow.NewSelector(ctx)
	var firstErr error
	pending := 0
	for _, s := range group {
		var f workflow.Future
		if len(s.Parallel) > 0 {
			sub := s.Parallel
			fut, settle := workflow.NewFuture(gctx)
			workflow.Go(gctx, func(c workflow.Context) { settle.Set(nil, p.runParallel(c, sub)) })
			f = fut
		} else {
			f = p.runOne(gctx, s)
		}
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
	return firstErr
}

func (p *pipeline) stepParams(s Step) (json.RawMessage, error) {
	if s.Params == nil {
		return taskmanager.OrEmptyObject(p.in.Task.Params), nil
	}
	steps := make(map[string]any, len(p.results))
	for name, raw := range p.results {
		steps[name], _ = p.decode(taskmanager.OrEmptyObject(raw)) // a handler's result is JSON
	}
	data := map[string]any{"params": p.params, "steps": steps}
	if !p.exact {
		rendered, err := legacyRender(s.Params, data)
		if err != nil {
			return nil, err
		}
		return json.Marshal(rendered)
	}
	rendered, err := render(s.Params, data)
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(rendered)
	if err == nil && len(out) > MaxStepParamsBytes {
		err = fmt.Errorf("rendered params are %d bytes, over the %d a step accepts", len(out), MaxStepParamsBytes)
	}
	return out, err
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

// reportProgress tells TaskManager how far the steps are; best effort.
func (p *pipeline) reportProgress(ctx workflow.Context, message string) {
	lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 2},
	})
	in := activities.ProgressInput{
		TaskID: p.in.Task.ID, WorkerID: p.claims.current.WorkerID,
		Percent: p.done * 100 / max(p.total, 1), Message: message,
	}
	_ = workflow.ExecuteLocalActivity(lctx, activities.ProgressActivityName, in).Get(ctx, nil)
}

func stepError(s Step, err error) error {
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("step %s (%s): %s", s.Name, s.Handler, failureMessage(s.Handler, err)), StepFailedErrorType, err)
}
