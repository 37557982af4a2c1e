package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/prismq/tmbridge/bridge/taskmanager"
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
func (b *Bridge) runnable() []string {
	names := append(b.reg.Names(), sortedKeys(b.cfg.Types)...)
	slices.Sort(names)
	return slices.Compact(names)
}

// resolveTypes finds the TaskManager ids of the types to serve, by name one
// by one (listing types is broken on the PHP deployment). It never returns
// a type the bridge cannot run.
func (b *Bridge) resolveTypes(ctx context.Context) ([]servedType, error) {
	runnable := b.runnable()
	var out []servedType
	add := func(t taskmanager.TaskType) {
		out = append(out, servedType{Name: t.Name, ID: t.ID, Options: b.cfg.TypeOptions(t.Name)})
	}
	switch {
	case len(b.cfg.TaskTypes) > 0:
		for _, name := range b.cfg.TaskTypes {
			if !slices.Contains(runnable, name) {
				return nil, fmt.Errorf("task_types: %q has no handler or route in this bridge (it can run: %s)", name, strings.Join(runnable, ", "))
			}
			t, err := b.api.GetTaskType(ctx, name)
			if errors.Is(err, taskmanager.ErrNotFound) {
				return nil, fmt.Errorf("task_types: %q is not registered in TaskManager", name)
			} else if err != nil {
				return nil, err
			}
			add(t)
		}
	case len(b.cfg.TaskTypeIDs) > 0:
		byID := map[taskmanager.ID]taskmanager.TaskType{}
		var known []string
		for _, name := range runnable {
			t, err := b.api.GetTaskType(ctx, name)
			if errors.Is(err, taskmanager.ErrNotFound) {
				continue
			} else if err != nil {
				return nil, err
			}
			byID[t.ID] = t
			known = append(known, fmt.Sprintf("%s=%s", t.Name, t.ID))
		}
		for _, id := range b.cfg.TaskTypeIDs {
			t, ok := byID[taskmanager.ID(id)]
			if !ok {
				return nil, fmt.Errorf("task_type_ids: %s is not a type this bridge can run (it can run: %s)", id, strings.Join(known, ", "))
			}
			add(t)
		}
	default:
		var missing []string
		for _, name := range runnable {
			t, err := b.api.GetTaskType(ctx, name)
			if errors.Is(err, taskmanager.ErrNotFound) {
				missing = append(missing, name)
				continue
			} else if err != nil {
				return nil, err
			}
			add(t)
		}
		if len(missing) > 0 {
			b.log.Info("types with a handler but not registered in TaskManager are not served", "types", missing)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("none of the types this bridge can run is registered in TaskManager (%s)", strings.Join(runnable, ", "))
		}
	}
	for _, t := range out {
		b.log.Info("serving task type", "task_type", t.Name, "task_type_id", string(t.ID), "local", t.Options.IsLocal(), "task_queue", t.Options.TaskQueue, "steps", len(t.Options.Steps))
	}
	return out, nil
}
