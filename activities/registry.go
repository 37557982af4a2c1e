package activities

import (
	"context"
	"errors"
	"fmt"
	"reflect"
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
	sealed   bool // Add fails: a bridge took the handlers (Seal)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{handlers: map[string]Handler{}} }

// Add registers h for a task type. It fails on an empty name, one with
// spaces around it (it would never match a task type), a name of the
// bridge's own activities (ReservedPrefix), a nil handler (a nil
// HandlerFunc or pointer too), a name already registered, or a sealed
// registry. The zero Registry is ready to use.
func (r *Registry) Add(name string, h Handler) error {
	if strings.TrimSpace(name) == "" {
		return errors.New("activities: register handler: empty task type name")
	}
	if strings.TrimSpace(name) != name {
		return fmt.Errorf("activities: register handler %q: spaces around the task type name", name)
	}
	if strings.HasPrefix(name, ReservedPrefix) {
		return fmt.Errorf("activities: register handler %q: names starting with %q are the bridge's own activities", name, ReservedPrefix)
	}
	if isNil(h) {
		return fmt.Errorf("activities: register handler %q: nil handler", name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sealed {
		return fmt.Errorf("activities: register handler %q: a bridge was built with this registry already (bridge.New); register before it, or build another bridge", name)
	}
	if _, dup := r.handlers[name]; dup {
		return fmt.Errorf("activities: register handler %q: already registered", name)
	}
	if r.handlers == nil {
		r.handlers = map[string]Handler{}
	}
	r.handlers[name] = h
	return nil
}

// ReservedPrefix starts the names of the bridge's own activities and
// workflow (tmbridge.ReportOutcome, tmbridge.Task): no handler may take
// one.
const ReservedPrefix = "tmbridge."

// Seal makes every later Add fail, saying why: bridge.New seals the
// registry it takes the handlers of, so that one added after it is not
// silently never served.
func (r *Registry) Seal() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sealed = true
}

// isNil reports whether h is nil, or a nil func, pointer, map, slice or
// channel in a non-nil interface (a HandlerFunc(nil), a nil *T).
func isNil(h Handler) bool {
	if h == nil {
		return true
	}
	switch v := reflect.ValueOf(h); v.Kind() {
	case reflect.Func, reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// MustAdd is Add that panics on error, for registration at start-up.
func (r *Registry) MustAdd(name string, h Handler) {
	if err := r.Add(name, h); err != nil {
		panic(err)
	}
}

// Register registers a typed handler in one line; it panics where Add
// fails (an empty, padded, duplicate or tmbridge. name, a nil fn, a
// sealed registry), like http.Handle.
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
