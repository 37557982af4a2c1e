// Package activities holds the Temporal activities of tmbridge: the task
// type handlers (one activity per type, named after it) and the completion
// activity that reports a task's outcome back to TaskManager.
//
// Register a handler with your own Go types:
//
//	reg := activities.NewRegistry()
//	activities.Register(reg, "image.resize", func(ctx context.Context, p ResizeParams) (ResizeResult, error) {
//		activities.ReportProgress(ctx, 50, "resizing")
//		return resize(ctx, p)
//	})
package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Handler runs one task. What it returns decides the task's outcome:
//
//   - a nil error: the task succeeds and the result is reported to
//     TaskManager (a result that is not a JSON object is wrapped as
//     {"value": result});
//   - an error wrapped with Permanent: the task fails at once, no retry;
//   - any other error: the attempt fails and Temporal retries it with the
//     type's retry policy; once the retries are spent, the task fails with
//     the last error's message.
//
// The context is cancelled when Temporal cancels the task or its timeout
// expires; a handler that runs long should watch it.
type Handler interface {
	Handle(ctx context.Context, params json.RawMessage) (json.RawMessage, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, params json.RawMessage) (json.RawMessage, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
	return f(ctx, params)
}

// Validator is implemented by params types that check themselves after
// decoding; an error fails the task as invalid params, without retry.
type Validator interface {
	Validate() error
}

// Typed adapts a function over the user's own types to Handler: params are
// decoded into P (a mismatch fails the task without retry and names the
// field), the result R is encoded as JSON.
func Typed[P, R any](fn func(ctx context.Context, params P) (R, error)) Handler {
	return HandlerFunc(func(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
		var p P
		if err := decodeParams(raw, &p); err != nil {
			return nil, err
		}
		r, err := fn(ctx, p)
		if err != nil {
			return nil, err
		}
		out, err := json.Marshal(r)
		if err != nil {
			return nil, Permanent(fmt.Errorf("encode result: %w", err))
		}
		return out, nil
	})
}

func decodeParams(raw json.RawMessage, p any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage(`{}`)
	}
	if err := json.Unmarshal(raw, p); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return InvalidParams(fmt.Errorf("field %q: cannot use JSON %s as %s", te.Field, te.Value, te.Type))
		}
		return InvalidParams(err)
	}
	if v, ok := p.(Validator); ok {
		if err := v.Validate(); err != nil {
			return InvalidParams(err)
		}
	}
	return nil
}

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
