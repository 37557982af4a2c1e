package workflows

import (
	"fmt"
	"reflect"
	"runtime/debug"

	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/activities"
)

// FailOnPanic wraps a Go workflow that handles a task type (`workflow:` in
// the config) so that a panic in its main coroutine fails its run with the
// panic's message (error type activities.ErrTypePanic, the stack in its
// details), as a handler activity's panic fails its attempt: the task is
// reported failed. Left to the SDK's default panic policy, the run would
// retry its workflow task forever and the task would never be reported.
// A panic in a goroutine of its own (workflow.Go) still blocks the run.
// fn must be a workflow function whose last result is an error; anything
// else is returned as it is, for the worker's registration to refuse.
func FailOnPanic(name string, fn any) any {
	v := reflect.ValueOf(fn)
	if !v.IsValid() {
		return fn
	}
	t := v.Type()
	errType := reflect.TypeFor[error]()
	if t.Kind() != reflect.Func || t.NumOut() == 0 || t.Out(t.NumOut()-1) != errType {
		return fn
	}
	return reflect.MakeFunc(t, func(args []reflect.Value) (out []reflect.Value) {
		defer func() {
			r := recover() // nil for the SDK's runtime.Goexit of a coroutine
			if r == nil {
				return
			}
			out = make([]reflect.Value, t.NumOut())
			for i := range t.NumOut() - 1 {
				out[i] = reflect.Zero(t.Out(i))
			}
			err := error(temporal.NewApplicationErrorWithOptions(fmt.Sprintf("workflow %s panicked: %v", name, r), activities.ErrTypePanic,
				temporal.ApplicationErrorOptions{NonRetryable: true, Details: []any{string(debug.Stack())}}))
			out[len(out)-1] = reflect.ValueOf(&err).Elem()
		}()
		return v.Call(args)
	}).Interface()
}
