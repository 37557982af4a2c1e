package activities

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Registry maps task type names to handlers. Names are stable strings:
// they are the activity names in Temporal history, so renaming one breaks
// running workflows. It is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	handlers map[string]Handler
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{handlers: map[string]Handler{}} }

// Add registers h for a task type. It fails on an empty name, a nil
// handler or a name already registered.
func (r *Registry) Add(name string, h Handler) error {
	if strings.TrimSpace(name) == "" {
		return errors.New("activities: register handler: empty task type name")
	}
	if h == nil {
		return fmt.Errorf("activities: register handler %q: nil handler", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.handlers[name]; dup {
		return fmt.Errorf("activities: register handler %q: already registered", name)
	}
	r.handlers[name] = h
	return nil
}

// MustAdd is Add that panics on error, for registration at start-up.
func (r *Registry) MustAdd(name string, h Handler) {
	if err := r.Add(name, h); err != nil {
		panic(err)
	}
}

// Register registers a typed handler in one line; it panics on an empty or
// duplicate name, like http.Handle.
func Register[P, R any](r *Registry, name string, fn func(ctx context.Context, params P) (R, error)) {
	if fn == nil {
		panic(fmt.Sprintf("activities: register handler %q: nil handler", name))
	}
	r.MustAdd(name, Typed(fn))
}

// Lookup returns the handler of a task type.
func (r *Registry) Lookup(name string) (Handler, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	h, ok := r.handlers[name]
	return h, ok
}

// Names returns the registered task type names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.handlers))
	for n := range r.handlers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
