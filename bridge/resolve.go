package bridge

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// This file turns the config into what runs: the handlers (Go ones plus
// the config's exec and http ones) and, per task, the workflow input with
// every option resolved. The bridge and bridgetest both use it, so a test
// runs a task exactly as the bridge would.

// TypeOptions returns the options a task of taskType runs with: its own
// (merged over type_defaults when the config was loaded) or type_defaults,
// every default filled. The workflow takes them as they are.
func (c Config) TypeOptions(taskType string) workflows.TypeOptions {
	o := c.TypeDefaults
	if tc, ok := c.Types[taskType]; ok {
		o = tc.TypeOptions
	}
	o = o.WithDefaults()
	if len(o.Steps) == 0 && o.Workflow == "" {
		o.Handler = o.HandlerFor(taskType)
	}
	return o
}

// Registry returns the handlers a bridge with this config runs: reg's plus
// the config's exec and http handlers (reg itself is not changed). It fails
// when a configured type or step has no handler and no route, or when an
// exec handler's program is not found.
func (c Config) Registry(reg *activities.Registry) (*activities.Registry, error) {
	out := activities.NewRegistry()
	if reg == nil {
		reg = activities.NewRegistry() // the config's handlers only
	}
	for _, name := range reg.Names() {
		h, _ := reg.Lookup(name)
		out.MustAdd(name, h)
	}
	for _, name := range sortedKeys(c.Types) {
		tc := c.Types[name]
		var h activities.Handler
		switch {
		case tc.Exec != nil:
			// A program missing here would fail every task of the type.
			if _, err := tc.Exec.Program(); err != nil {
				return nil, fmt.Errorf("config: types.%s.exec.command: %w", name, err)
			}
			h = activities.Exec(*tc.Exec)
		case tc.HTTP != nil:
			h = activities.HTTP(*tc.HTTP, nil)
		default:
			continue
		}
		if _, dup := out.Lookup(name); dup {
			return nil, fmt.Errorf("config: types.%s: a Go handler has this name too", name)
		}
		if err := out.Add(name, h); err != nil {
			return nil, fmt.Errorf("config: types.%s: %w", name, err)
		}
	}
	return out, c.checkRoutes(out)
}

// checkRoutes makes sure every configured type and step can run on reg's
// handlers or is routed to another task queue, and every type task_types
// names is one of them.
func (c Config) checkRoutes(reg *activities.Registry) error {
	var errs []error
	runnable := runnableTypes(c, reg)
	for _, name := range c.TaskTypes {
		if !slices.Contains(runnable, name) {
			errs = append(errs, fmt.Errorf("config: task_types: %q has no handler or route in this bridge (it can run: %s)", name, strings.Join(runnable, ", ")))
		}
	}
	has := func(name string) bool { _, ok := reg.Lookup(name); return ok }
	for _, name := range sortedKeys(c.Types) {
		o := c.TypeOptions(name)
		var walk func(path string, steps []workflows.Step)
		walk = func(path string, steps []workflows.Step) {
			for i, s := range steps {
				at := fmt.Sprintf("%s[%d]", path, i)
				walk(at+".parallel", s.Parallel)
				walk(at+".on_failure", s.OnFailure)
				if s.Handler != "" && s.TaskQueue == "" && !has(s.Handler) {
					errs = append(errs, fmt.Errorf("config: types.%s.%s.handler: no handler %q is registered (known: %s)", name, at, s.Handler, strings.Join(reg.Names(), ", ")))
				}
			}
		}
		switch {
		case len(o.Steps) > 0:
			walk("steps", o.Steps)
		case o.Workflow != "", o.TaskQueue != "":
		case !has(o.HandlerFor(name)):
			errs = append(errs, fmt.Errorf("config: types.%s: no handler %q is registered and no route (task_queue, steps, workflow, exec, http) is set", name, o.HandlerFor(name)))
		}
	}
	return errors.Join(errs...)
}

// TaskInput is the input of the workflow that runs task, with its type's
// resolved options (TypeOptions), for the claim this worker made at
// claimedAt (zero: a claim found again, of unknown age).
func (c Config) TaskInput(task taskmanager.Task, opts workflows.TypeOptions, claimedAt time.Time) workflows.TaskInput {
	return workflows.TaskInput{
		Task: workflows.Task{
			ID: string(task.ID), Type: task.Type, Params: task.Params.Raw(),
			Attempts: int(task.Attempts), Priority: int(task.Priority),
		},
		Claim:        workflows.Claim{WorkerID: c.WorkerID, Attempts: int(task.Attempts), ClaimedAt: claimedAt.UTC()},
		Options:      opts,
		ClaimTimeout: c.ClaimTimeout,
		ReadOnRetry:  true,
	}
}
