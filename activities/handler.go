package activities

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/prismq/tmbridge/taskmanager"
)

// Handler runs one task. What it returns decides the task's outcome:
//
//   - a nil error: the task succeeds and the result is reported to
//     TaskManager (a result that is not a JSON object is wrapped as
//     {"value": result});
//   - an error wrapped with Permanent: the attempt fails at once, with no
//     Temporal retry, and the failure is reported (TaskManager still
//     queues the task again while it has attempts left);
//   - an error wrapped with InvalidParams: the same, its message saying
//     the params do not fit (Typed handlers return it when params do not
//     decode or validate);
//   - an error wrapped with Transient: the attempt fails and is retried,
//     after its retryAfter when positive (a Retry-After the handler was
//     given);
//   - any other error: the attempt fails and Temporal retries it with the
//     type's retry policy; once the retries are spent, the task fails with
//     the last error's message.
//
// The context is cancelled when Temporal cancels the task or its timeout
// expires; a handler that runs long should watch it.
type Handler interface {
	Handle(ctx context.Context, params json.RawMessage) (json.RawMessage, error)
}

// misconfigured is the handler of a route built from a config that does
// not hold: no attempt could succeed, so each fails for good, saying why.
func misconfigured(err error) Handler {
	return HandlerFunc(func(context.Context, json.RawMessage) (json.RawMessage, error) {
		return nil, Permanent(fmt.Errorf("handler misconfigured: %w", err))
	})
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, params json.RawMessage) (json.RawMessage, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, params json.RawMessage) (json.RawMessage, error) {
	return f(ctx, params)
}

// Validator is implemented by params types that check themselves after
// decoding; an error fails the attempt as invalid params, without
// Temporal retry.
type Validator interface {
	Validate() error
}

// Typed adapts a function over the user's own types to Handler: params are
// decoded into P (a mismatch fails the task without retry and names the
// field), the result R is encoded as JSON. A nil fn gives a nil Handler,
// which Registry.Add refuses.
func Typed[P, R any](fn func(ctx context.Context, params P) (R, error)) Handler {
	if fn == nil {
		return nil // Registry.Add refuses it
	}
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
	// PHP decodes a JSON object into an array and writes an empty one
	// back as []: where the handler wants an object (a map, a struct), an
	// empty list reads as {}.
	if t := reflect.TypeOf(p); t != nil && t.Kind() == reflect.Pointer {
		if fixed, changed := emptyListsAsObjects(raw, t.Elem(), 0); changed {
			raw = fixed
		}
	}
	err := json.Unmarshal(raw, p)
	if err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return InvalidParams(fmt.Errorf("field %q: cannot use JSON %s as %s", te.Field, te.Value, te.Type))
		}
		return InvalidParams(err)
	}
	v, ok := p.(Validator)
	if !ok {
		// A pointer params type (func(ctx, p *Params)): p holds the
		// pointer, nil for JSON null.
		if e := reflect.ValueOf(p); e.Kind() == reflect.Pointer && e.Elem().Kind() == reflect.Pointer && !e.Elem().IsNil() {
			v, ok = e.Elem().Interface().(Validator)
		}
	}
	if ok {
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
	// ReadOnRetry asks the bridge's own handler activity to read the task
	// before an attempt Temporal retries (and before a rerun SkipIfDone
	// asks for), and to run no handler when the read shows the claim
	// over: a later claim (more attempts) of another worker id, or the
	// task completed, failed, or pending with as many attempts. The
	// attempt then fails for good with ErrTypeClaimOver, its details what
	// the read saw (ClaimSeen). A read that fails or takes over a quarter
	// of the attempt's time, or that shows no other holder, runs the
	// handler; an attempt whose context ends during the read fails with it.
	ReadOnRetry bool `json:"read_on_retry,omitempty"`
	// ReadFirst asks, with ReadOnRetry, for that read before the first
	// attempt too. The workflow sets it for a local step scheduled in a
	// replay: a bridge that died may have run it, and the task's other
	// steps and report, already.
	ReadFirst bool `json:"read_first,omitempty"`
	// RunToken stands for the run that scheduled a local handler, in
	// this process only (0 for a regular handler, whose input Temporal
	// records). With ReadOnRetry, a handler whose run left this process
	// before it started (a workflow task that failed or timed out, a run
	// reset or terminated) reads first too.
	RunToken uint64 `json:"run_token,omitempty"`
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

// emptyListsAsObjects returns raw with each empty list that t (the Go
// type raw decodes into) wants as an object (a map, a struct) written {},
// and whether it changed anything. It follows t as encoding/json does:
// struct fields by their json name (or, failing that, ignoring case),
// embedded structs' fields in line, map values, list items. Objects keep
// their keys in order. Past maxParamsDepth it leaves raw as it is.
func emptyListsAsObjects(raw json.RawMessage, t reflect.Type, depth int) (json.RawMessage, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || depth > maxParamsDepth || decodesItself(t) {
		return raw, false
	}
	switch t.Kind() {
	case reflect.Map, reflect.Struct:
		if string(raw) == "[]" {
			return json.RawMessage(`{}`), true
		}
		if raw[0] != '{' {
			return raw, false
		}
		keys, vals, ok := objectPairs(raw)
		if !ok {
			return raw, false
		}
		changed := false
		for i, k := range keys {
			var vt reflect.Type
			if t.Kind() == reflect.Map {
				vt = t.Elem()
			} else if f, ok := jsonField(t, k); ok {
				vt = f
			}
			if vt == nil {
				continue
			}
			if v, c := emptyListsAsObjects(vals[i], vt, depth+1); c {
				vals[i], changed = v, true
			}
		}
		if !changed {
			return raw, false
		}
		var b bytes.Buffer
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			kb, _ := json.Marshal(k)
			b.Write(kb)
			b.WriteByte(':')
			b.Write(vals[i])
		}
		b.WriteByte('}')
		return b.Bytes(), true
	case reflect.Slice, reflect.Array:
		if raw[0] != '[' {
			return raw, false
		}
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return raw, false
		}
		changed := false
		for i := range items {
			if v, c := emptyListsAsObjects(items[i], t.Elem(), depth+1); c {
				items[i], changed = v, true
			}
		}
		if !changed {
			return raw, false
		}
		out, err := json.Marshal(items)
		return out, err == nil
	}
	return raw, false
}

// decodesItself reports whether t reads its own JSON (json.Unmarshaler,
// encoding.TextUnmarshaler): what [] means to it is its own affair.
func decodesItself(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return t.Implements(jsonUnmarshaler) || p.Implements(jsonUnmarshaler) || t.Implements(textUnmarshaler) || p.Implements(textUnmarshaler)
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// maxParamsDepth bounds how deep emptyListsAsObjects follows params (the
// bridge fails a task whose params nest deeper before it starts a run:
// bridge.MaxParamsDepth, the same bound).
const maxParamsDepth = 100

// objectPairs returns a JSON object's keys and values, in order.
func objectPairs(raw json.RawMessage) (keys []string, vals []json.RawMessage, ok bool) {
	d := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	for d.More() {
		tok, err := d.Token()
		k, isKey := tok.(string)
		if err != nil || !isKey {
			return nil, nil, false
		}
		var v json.RawMessage
		if d.Decode(&v) != nil {
			return nil, nil, false
		}
		keys, vals = append(keys, k), append(vals, v)
	}
	return keys, vals, true
}

// jsonField returns the type of struct t's field that JSON key k decodes
// into, as encoding/json picks it: by exact json name, else ignoring case;
// an embedded struct's fields count as t's own.
func jsonField(t reflect.Type, k string) (reflect.Type, bool) {
	var folded reflect.Type
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				continue // its fields are t's, in line
			}
			name = f.Name
		}
		if name == k {
			return f.Type, true
		}
		if folded == nil && strings.EqualFold(name, k) {
			folded = f.Type
		}
	}
	return folded, folded != nil
}
