package activities

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/prismq/tmbridge/bridge/taskmanager"
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
	raw = taskmanager.OrEmptyObject(raw)
	err := json.Unmarshal(raw, p)
	// PHP decodes a JSON object into an array and writes an empty one
	// back as []: where the handler wants an object (a map, a struct), an
	// empty list reads as {}. Each retry fixes one such field.
	for tries := 0; err != nil && tries < maxEmptyObjects; tries++ {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) || te.Value != "array" || !objectKind(te.Type) {
			break
		}
		fixed, ok := emptyListAsObject(raw, te.Field)
		if !ok {
			break
		}
		raw = fixed
		if v := reflect.ValueOf(p); v.Kind() == reflect.Pointer && !v.IsNil() {
			v.Elem().SetZero() // decode afresh, not over the first try
		}
		err = json.Unmarshal(raw, p)
	}
	if err != nil {
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

// HandlerInput is what a handler activity receives. A worker written with
// another Temporal SDK that serves a routed type gets the same JSON object.
type HandlerInput struct {
	TaskID   string          `json:"task_id"`
	TaskType string          `json:"task_type"`
	Attempt  int             `json:"attempt"` // TaskManager's attempt count
	WorkerID string          `json:"worker_id"`
	Params   json.RawMessage `json:"params"`
	// SkipIfDone asks the bridge's own handler activity to read the task
	// first and, when TaskManager already holds an outcome, return that
	// outcome instead of running the handler. The workflow sets it for a
	// local handler scheduled after its first workflow task: a bridge that
	// died mid-task may have run the handler and reported already, and a
	// local activity is then run again.
	SkipIfDone bool `json:"skip_if_done,omitempty"`
	// Step names the step of a multi-step task this handler runs for (""
	// for a task of one handler). A step's own progress goes to Temporal
	// only: TaskManager gets the task's, in Progress and ProgressDone.
	Step string `json:"step,omitempty"`
	// Progress, when set, is the task's progress (the steps done so far)
	// that the handler activity posts to TaskManager as its first attempt
	// starts. The workflow hands out only rising values.
	Progress *Progress `json:"progress,omitempty"`
	// ProgressDone, when set, is the task's progress that the handler
	// activity posts when its handler succeeds: a step that runs alone
	// knows what its completion makes.
	ProgressDone *Progress `json:"progress_done,omitempty"`
}

// inputKey carries the HandlerInput in a handler's context.
type inputKey struct{}

// TaskInfo returns the task a handler runs for, when called in one.
func TaskInfo(ctx context.Context) (HandlerInput, bool) {
	in, ok := ctx.Value(inputKey{}).(HandlerInput)
	return in, ok
}

// maxEmptyObjects bounds the fields of PHP's [] for {} that decodeParams
// reads as objects in one task's params.
const maxEmptyObjects = 100

// objectKind reports whether t (or what it points to) decodes from a JSON
// object.
func objectKind(t reflect.Type) bool {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t != nil && (t.Kind() == reflect.Map || t.Kind() == reflect.Struct)
}

// emptyListAsObject returns raw with the value at path (JSON keys joined by
// dots, as json.UnmarshalTypeError.Field names them; "" the whole value)
// replaced by {} when it is an empty list; ok is false otherwise.
func emptyListAsObject(raw json.RawMessage, path string) (json.RawMessage, bool) {
	if path == "" {
		if string(bytes.TrimSpace(raw)) != "[]" {
			return nil, false
		}
		return json.RawMessage(`{}`), true
	}
	key, rest, _ := strings.Cut(path, ".")
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return nil, false
	}
	v, ok := obj[key]
	if !ok {
		return nil, false
	}
	if obj[key], ok = emptyListAsObject(v, rest); !ok {
		return nil, false
	}
	out, err := json.Marshal(obj)
	return out, err == nil
}
