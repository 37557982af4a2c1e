package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// servedType is a task type this bridge claims.
type servedType struct {
	Name    string
	ID      taskmanager.ID
	Options workflows.TypeOptions
}

// runnable returns the names of the types this bridge can run: every
// handler and every configured type (New made sure each can run).
func (b *Bridge) runnable() []string { return runnableTypes(b.cfg, b.reg) }

// runnableTypes returns the names of the types a bridge with cfg and reg
// (cfg.Registry's) can run: every handler and every configured type.
func runnableTypes(cfg Config, reg *activities.Registry) []string {
	var names []string
	if reg != nil {
		names = reg.Names()
	}
	names = append(names, sortedKeys(cfg.Types)...)
	slices.Sort(names)
	return slices.Compact(names)
}

// resolveTypes finds the TaskManager ids of the types to serve, by name one
// by one (listing types is broken on the PHP deployment). It never returns
// a type the bridge cannot run.
func (b *Bridge) resolveTypes(ctx context.Context) ([]servedType, error) {
	var out []servedType
	var missing []string
	for _, l := range lookupTypes(ctx, b.cfg, b.runnable(), b.api, false) {
		switch {
		case l.Err != nil:
			return nil, l.Err
		case l.Unregistered:
			missing = append(missing, l.Name)
		default:
			out = append(out, servedType{Name: l.Name, ID: l.ID, Options: b.cfg.TypeOptions(l.Name)})
		}
	}
	if len(missing) > 0 {
		b.log.Info("types with a handler but not registered in TaskManager are not served", "types", missing)
	}
	if len(out) == 0 {
		return nil, noTypeServed(b.runnable())
	}
	for _, t := range out {
		b.log.Info("serving task type", "task_type", t.Name, "task_type_id", string(t.ID), "local", t.Options.IsLocal(), "task_queue", t.Options.TaskQueue, "steps", len(t.Options.Steps))
	}
	return out, nil
}

// noTypeServed is the error of a bridge left with no type to serve.
func noTypeServed(runnable []string) error {
	return fmt.Errorf("none of the types this bridge can run is registered in TaskManager (%s)", strings.Join(runnable, ", "))
}

// typeLookup is what looking up one type to serve found.
type typeLookup struct {
	Name string         // the type's name ("" for a task_type_ids id not found)
	ID   taskmanager.ID // its TaskManager id (for task_type_ids: the id asked for)
	// Err says why the type is not served: a config mistake (no handler,
	// not registered) or TaskManager's error. nil: served, unless
	// Unregistered.
	Err error
	// Unregistered: with neither task_types nor task_type_ids, a type
	// this bridge can run that TaskManager does not know. It is not
	// served, and that is no error.
	Unregistered bool
}

// lookupTypes looks up the types to serve in TaskManager, by name one by
// one (listing types is broken on the PHP deployment): one entry per name
// of task_types, per id of task_type_ids or, with neither, per type this
// bridge can run (runnable). A TaskManager error ends the lookups unless
// keepGoing (tmbridge check reports every type).
func lookupTypes(ctx context.Context, cfg Config, runnable []string, api *taskmanager.Client, keepGoing bool) []typeLookup {
	var out []typeLookup
	switch {
	case len(cfg.TaskTypes) > 0:
		for _, name := range cfg.TaskTypes {
			if !slices.Contains(runnable, name) {
				out = append(out, typeLookup{Name: name, Err: fmt.Errorf("task_types: %q has no handler or route in this bridge (it can run: %s)", name, strings.Join(runnable, ", "))})
				continue
			}
			l := lookupName(ctx, api, name)
			if l.Unregistered {
				l = typeLookup{Name: name, Err: fmt.Errorf("task_types: %q is not registered in TaskManager", name)}
			} else if l.Err != nil && !keepGoing {
				return append(out, l)
			}
			out = append(out, l)
		}
	case len(cfg.TaskTypeIDs) > 0:
		byID := map[taskmanager.ID]taskmanager.TaskType{}
		mismatched := map[taskmanager.ID]error{}
		var known []string
		var lookupErr error
		for _, name := range runnable {
			t, err := api.GetTaskType(ctx, name)
			if errors.Is(err, taskmanager.ErrNotFound) {
				continue
			} else if err != nil {
				if !keepGoing {
					return []typeLookup{{Err: err}}
				}
				lookupErr = cmp.Or(lookupErr, err)
				continue
			}
			if err := nameMismatch(name, t); err != nil {
				mismatched[t.ID] = err
				continue
			}
			byID[t.ID] = t
			known = append(known, fmt.Sprintf("%s=%s", t.Name, t.ID))
		}
		for _, id := range cfg.TaskTypeIDs {
			t, ok := byID[taskmanager.ID(id)]
			switch {
			case mismatched[taskmanager.ID(id)] != nil:
				out = append(out, typeLookup{ID: taskmanager.ID(id), Err: fmt.Errorf("task_type_ids: %s: %w", id, mismatched[taskmanager.ID(id)])})
			case ok:
				out = append(out, typeLookup{Name: t.Name, ID: t.ID})
			case lookupErr != nil:
				out = append(out, typeLookup{ID: taskmanager.ID(id), Err: fmt.Errorf("task_type_ids: %s: not found, but a lookup failed: %w", id, lookupErr)})
			default:
				out = append(out, typeLookup{ID: taskmanager.ID(id), Err: fmt.Errorf("task_type_ids: %s is not a type this bridge can run (it can run: %s)", id, strings.Join(known, ", "))})
			}
		}
	default:
		for _, name := range runnable {
			l := lookupName(ctx, api, name)
			if out = append(out, l); l.Err != nil && !keepGoing {
				return out
			}
		}
	}
	return out
}

// lookupName looks a type up by name in TaskManager: registered (its ID
// set), Unregistered, or the lookup's error.
func lookupName(ctx context.Context, api *taskmanager.Client, name string) typeLookup {
	t, err := api.GetTaskType(ctx, name)
	switch {
	case errors.Is(err, taskmanager.ErrNotFound):
		return typeLookup{Name: name, Unregistered: true}
	case err != nil:
		return typeLookup{Name: name, Err: err}
	}
	if err := nameMismatch(name, t); err != nil {
		return typeLookup{Name: name, Err: err}
	}
	return typeLookup{Name: t.Name, ID: t.ID}
}

// nameMismatch is the error of a lookup of name that TaskManager answered
// with another type's name: one that differs in case (a database that
// compares names case-insensitively finds it), or garbage. Its tasks carry
// TaskManager's name, and no handler or type options of this bridge have
// it: serving it would fail every task, so the bridge does not start.
func nameMismatch(name string, t taskmanager.TaskType) error {
	if t.Name == name {
		return nil
	}
	return fmt.Errorf("type %q: TaskManager answers its lookup with type %q (id %s), and its tasks carry that name: name the handler and the config's type exactly as TaskManager does", name, t.Name, t.ID)
}
